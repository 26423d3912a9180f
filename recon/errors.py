"""Errors that reach the user as one line.

The CLI prints ``recon: error: <message>`` for any :class:`ReconError` and exits
with its ``exit_code``; nothing else in recon prints tracebacks for expected
failures.
"""

from __future__ import annotations


class ReconError(Exception):
    """A failure the user can act on. Its message names the file and the problem."""

    exit_code = 1


class InputError(ReconError):
    """Bad input: a missing or unreadable file, an inconsistent scene, a bad flag."""

    exit_code = 2


class StageError(ReconError):
    """A stage could not finish (for example the optimisation diverged)."""

    exit_code = 1
