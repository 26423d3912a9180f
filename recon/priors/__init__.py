"""Generative priors for the prior stage: a per-scene repair model, a pretrained pipeline, and pseudo cameras."""

from __future__ import annotations

import importlib.util
from typing import Protocol

from torch import Tensor

from recon.errors import InputError


class RepairModel(Protocol):
    """What the prior stage asks of a repair model (recon/priors/repair.py's SceneRepair, trained on the scene;
    recon/priors/pretrained.py's PretrainedRepair, a pipeline from disk)."""

    name: str  # recorded in metrics/prior
    pipeline_class: str  # the network and sampler, for the record
    losses: list[float]  # its training loss, every log_every steps (empty when not trained here)

    @property
    def log_every(self) -> int | None:
        """Steps between two entries of ``losses`` (None when not trained here)."""

    @property
    def parameters(self) -> int | None:
        """Trainable parameters (None when not trained here)."""

    def repair(self, images: Tensor) -> Tensor:
        """Repaired copies of renders [N, H, W, 3] in [0, 1], same size and device."""


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
