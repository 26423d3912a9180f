"""What every importer shares: the options a scene is read with, a layout's entry, and a view node's standard id.

The importers (``recon/io/<layout>.py``) import these from here; :mod:`recon.io` lists the importers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recon.scene.graph import SceneGraph, View


@dataclass(frozen=True)
class ImportOptions:
    """How to read a scene; see :class:`recon.config.DataConfig` for the meaning of each."""

    downscale: int = 1
    max_side: int = 0  # no cap when a scene is read on its own (a benchmark's protocol); a run passes data.max_side
    light: int = 3
    strict: bool = False
    masks: bool = True
    train_masks: bool = True
    spare_split: str | None = None


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    detect: Callable[[Path], bool]
    read: Callable[[Path, ImportOptions], SceneGraph]


def new_view(index: int, name: str, image: Path | None, camera: str | None = None, mask: Path | None = None) -> View:
    """A view node with the standard id for its index."""
    return View(
        id=f"view/{index:04d}",
        name=name,
        index=index,
        image=str(image) if image is not None else None,
        camera=camera,
        mask=str(mask) if mask is not None else None,
    )
