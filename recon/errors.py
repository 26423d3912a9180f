"""Errors that reach the user as one line.

The CLI prints ``recon: error: <message>`` for any :class:`ReconError` and exits
with its ``exit_code``; nothing else in recon prints tracebacks for expected
failures.
"""

from __future__ import annotations

import errno
from pathlib import Path


class ReconError(Exception):
    """A failure the user can act on. Its message names the file and the problem."""

    exit_code = 1


class InputError(ReconError):
    """Bad input: a missing or unreadable file, an inconsistent scene, a bad flag."""

    exit_code = 2


class StageError(ReconError):
    """A stage could not finish (for example the optimisation diverged)."""

    exit_code = 1


class OutputError(ReconError):
    """An output cannot be written: no permission, a read-only or full file system, a file where a folder
    must be (or the other way round)."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def output_error(exc: OSError, path: Path | str) -> OutputError:
    """The one line for ``exc``, met while writing ``path`` (the file recon meant to write, not a temporary one)."""
    if exc.errno == errno.ENOSPC:
        return OutputError(f"no space left on device writing {path}")
    if exc.errno == errno.EDQUOT:
        return OutputError(f"disk quota exceeded writing {path}")
    return OutputError(f"{path}: cannot write ({exc.strerror or exc})")
