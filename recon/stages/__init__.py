"""The pipeline's stages, in the order they run.

Each stage is a module with ``NAME``, ``CONFIG`` (the section of
:class:`recon.config.RunConfig` it reads) and ``run(graph, cfg, device) -> graph``
(``device``: the torch device of the run, resolved once by the pipeline), and
optionally ``validate(graph, cfg, device)``, called on every stage before anything is
written so that bad input fails early (in order: the views stage's gives the
views their roles, so that the later checks see the run's training views),
``enabled(cfg)``, false when the
config switches the stage off (it is then recorded as off, not run),
``ON_DEVICE = True`` when its results depend on the device (CPU or CUDA: the
device type is then part of its reuse key), and
``OUTPUTS``, the files and folders (relative to the scene folder) it writes
that no node of the graph names; they are deleted with its nodes whenever its
results are redone or made stale. Stages never import each other; they meet in
the scene graph.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from recon.errors import InputError

PIPELINE: tuple[str, ...] = ("views", "poses", "init", "optimize", "prior", "mesh")


def names(until: str | None = None) -> list[str]:
    """The stage names in order, up to and including ``until``."""
    if until is None:
        return list(PIPELINE)
    if until not in PIPELINE:
        raise InputError(f"--until {until}: unknown stage (stages: {', '.join(PIPELINE)})")
    return list(PIPELINE[: PIPELINE.index(until) + 1])


def load(until: str | None = None) -> list[ModuleType]:
    """The stage modules in order, up to and including ``until``."""
    return [module(name) for name in names(until)]


def module(name: str) -> ModuleType:
    """The module of stage ``name`` (one of :data:`PIPELINE`)."""
    return importlib.import_module(f"recon.stages.{name}")
