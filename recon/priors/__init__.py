"""Generative priors for the prior stage: a per-scene repair model, a pretrained pipeline, and pseudo cameras."""

from __future__ import annotations

import importlib.util

from recon.errors import InputError


def require(packages: tuple[str, ...], user: str) -> None:
    """Raise :class:`InputError` naming what of ``packages`` ``user`` needs and is not installed.

    The packages are looked for, not imported (diffusers takes seconds to import), so the prior stage's
    check before a run costs nothing.
    """
    missing = [name for name in packages if not _installed(name)]
    if missing:
        raise InputError(f"{user} needs {' and '.join(missing)} (pip install {' '.join(missing)})")


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that is not a package; a module set to None (blocked)
        return False
