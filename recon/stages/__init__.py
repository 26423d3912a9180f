"""The pipeline's stages, in the order they run.

Each stage is a module with ``NAME``, ``CONFIG`` (the section of
:class:`recon.config.RunConfig` it reads) and ``run(graph, cfg) -> graph``, and
optionally ``validate(graph, cfg)``, called on every stage before anything is
written so that bad input fails early, and ``enabled(cfg)``, false when the
config switches the stage off (it is then recorded as off, not run). Stages
never import each other; they meet in the scene graph.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from recon.errors import InputError

PIPELINE: tuple[str, ...] = ("views", "poses", "init", "optimize", "prior", "mesh")


def load(until: str | None = None) -> list[ModuleType]:
    """The stage modules in order, up to and including ``until``."""
    names = list(PIPELINE)
    if until is not None:
        if until not in names:
            raise InputError(f"--until {until}: unknown stage (stages: {', '.join(names)})")
        names = names[: names.index(until) + 1]
    return [importlib.import_module(f"recon.stages.{name}") for name in names]
