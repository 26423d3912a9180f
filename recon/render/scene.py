"""Render a finished scene's splats from any camera: the viewer's button, the evaluator's submission renders.

The splats are the scene's newest (``gaussians/prior`` when the prior stage
ran, else ``gaussians/final``) or, while a run is still optimising, its newest
snapshot in ``assets/live/`` (recon/live.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recon.errors import InputError
from recon.live import LIVE_DIR, SPLATS, read_status
from recon.render import render
from recon.render.splats import load_ply, sh_degree_of
from recon.scene.graph import Camera, SceneGraph


def splat_source(graph: SceneGraph) -> tuple[Path, str, dict | None] | None:
    """(PLY path, kind, live status) of the newest splats, else of a running optimisation's snapshot, else None.

    The live status is None for the final splats (and for a snapshot whose status is being replaced).
    """
    final = graph.splats()
    if final is not None:
        return graph.resolve(final.path), final.kind, None
    live = graph.resolve(f"{LIVE_DIR}/{SPLATS}")
    if not live.is_file():
        return None
    status = read_status(graph.root) if graph.root is not None else None
    return live, (status or {}).get("kind", "3dgs"), status


def load_scene_splats(graph: SceneGraph, device: torch.device) -> tuple[dict[str, torch.Tensor], str]:
    """(splat parameters, kind) of the scene's final splats, else of a running optimisation's snapshot."""
    source = splat_source(graph)
    if source is None:
        raise InputError(f"{graph.root}: the scene has no splats yet (the optimize stage has not run)")
    path, kind, _ = source
    return load_ply(path, device), kind


@torch.no_grad()
def render_camera(splats: dict[str, torch.Tensor], kind: str, camera: Camera, scale: float = 1.0,
                  background: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """RGB float32 [H, W, 3] in [0, 1] seen by ``camera`` with its image size (and K) multiplied by ``scale``."""
    device = splats["means"].device
    K = camera.K.copy()
    K[:2] *= scale
    width, height = int(round(camera.width * scale)), int(round(camera.height * scale))
    out = render(splats, torch.tensor(camera.world_to_camera, dtype=torch.float32, device=device)[None],
                 torch.tensor(K, dtype=torch.float32, device=device)[None], width, height, kind=kind,
                 sh_degree=sh_degree_of(splats),
                 backgrounds=torch.tensor([background], dtype=torch.float32, device=device))
    return out.rgb[0].clamp(0, 1).cpu().numpy()
