"""Render a scene's splats from any of its cameras: the viewer's button, the evaluator's submission renders.

Which splats are the scene's newest is :func:`recon.live.load_scene_splats`'s answer.
"""

from __future__ import annotations

import numpy as np
import torch

from recon.render import SplatKind, render
from recon.render.splats import sh_degree_of
from recon.scene.graph import Camera


@torch.no_grad()
def render_camera(splats: dict[str, torch.Tensor], kind: SplatKind, camera: Camera, scale: float = 1.0,
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
