"""The pipeline's stages, in the order they run.

Each stage is a module with ``NAME``, ``CONFIG`` (the section of
:class:`recon.config.RunConfig` it reads) and ``run(graph, cfg) -> graph``, and
optionally ``validate(graph, cfg)``, called on every stage before anything is
written so that bad input fails early. Stages never import each other; they
meet in the scene graph.
"""

from __future__ import annotations

import importlib
from types import ModuleType

PIPELINE: tuple[str, ...] = ("views",)


def load() -> list[ModuleType]:
    return [importlib.import_module(f"recon.stages.{name}") for name in PIPELINE]
