"""Gaussian splat parameters: creation from points, and the standard 3DGS PLY layout.

Parameters are the raw, optimisable tensors described in render/__init__.py.
The PLY layout is the one of the 3DGS reference code, which splat viewers read:
``x y z nx ny nz f_dc_0..2 f_rest_0..M opacity scale_0..2 rot_0..3`` with
``f_rest`` stored channel by channel, opacity as a logit, scales as logs and
rotations as (w, x, y, z). 2DGS splats are written with a third scale of
``log(1e-7)`` so that viewers draw them as flat discs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from recon.errors import InputError
from recon.io import ply
from recon.render.sh import rgb_to_sh0

FLAT_LOG_SCALE = float(np.log(1e-7))


def init_splats(points: np.ndarray, colors: np.ndarray, sh_degree: int, kind: str = "3dgs",
                init_scale: float = 1.0, init_opacity: float = 0.1,
                device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Isotropic splats at ``points`` [N, 3] with colours [N, 3], sized by the distance to their 3 nearest
    neighbours."""
    pts = np.asarray(points, dtype=np.float64)
    k = min(4, len(pts))
    dist, _ = cKDTree(pts).query(pts, k=k)
    mean_dist = np.sqrt((dist[:, 1:] ** 2).mean(1)) if k > 1 else np.full(len(pts), 0.01)
    mean_dist = np.clip(mean_dist, 1e-7, None)
    n = len(pts)
    scales = np.log(mean_dist * init_scale)[:, None].repeat(3, 1)
    quats = np.zeros((n, 4))
    quats[:, 0] = 1.0
    f = lambda a: torch.tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    splats = {
        "means": f(pts),
        "scales": f(scales),
        "quats": f(quats),
        "opacities": torch.logit(torch.full((n,), init_opacity, device=device)),
        "sh0": rgb_to_sh0(f(np.asarray(colors)))[:, None, :],
    }
    if sh_degree > 0:
        splats["shN"] = torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3, device=device)
    return splats


def save_ply(path: Path, splats: dict[str, Tensor], kind: str = "3dgs") -> None:
    """Write splats in the 3DGS PLY layout."""
    p = {k: v.detach().float().cpu().numpy() for k, v in splats.items()}
    n = len(p["means"])
    vertex: dict[str, np.ndarray] = {"x": p["means"][:, 0], "y": p["means"][:, 1], "z": p["means"][:, 2]}
    vertex.update(nx=np.zeros(n, np.float32), ny=np.zeros(n, np.float32), nz=np.zeros(n, np.float32))
    for c in range(3):
        vertex[f"f_dc_{c}"] = p["sh0"][:, 0, c]
    if "shN" in p:
        rest = p["shN"].transpose(0, 2, 1).reshape(n, -1)
        for i in range(rest.shape[1]):
            vertex[f"f_rest_{i}"] = rest[:, i]
    vertex["opacity"] = p["opacities"]
    scales = p["scales"].copy()
    if kind == "2dgs":
        scales[:, 2] = FLAT_LOG_SCALE
    for i in range(3):
        vertex[f"scale_{i}"] = scales[:, i]
    for i in range(4):
        vertex[f"rot_{i}"] = p["quats"][:, i]
    ply.write_ply(path, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in vertex.items()})


def load_ply(path: Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read splats written in the 3DGS PLY layout (by recon or another 3DGS tool)."""
    v, _ = ply.read_ply(path)
    required = ["x", "y", "z", "f_dc_0", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_3"]
    missing = [k for k in required if k not in v]
    if missing:
        raise InputError(f"{path}: not a Gaussian splat PLY (missing {', '.join(missing)})")
    f = lambda a: torch.tensor(np.asarray(a, dtype=np.float32), device=device)  # noqa: E731
    n = len(v["x"])
    splats = {
        "means": f(np.stack([v["x"], v["y"], v["z"]], 1)),
        "scales": f(np.stack([v[f"scale_{i}"] for i in range(3)], 1)),
        "quats": f(np.stack([v[f"rot_{i}"] for i in range(4)], 1)),
        "opacities": f(v["opacity"]),
        "sh0": f(np.stack([v[f"f_dc_{c}"] for c in range(3)], 1))[:, None, :],
    }
    rest = sorted((k for k in v if k.startswith("f_rest_")), key=lambda k: int(k.split("_")[-1]))
    if rest:
        coeffs = np.stack([v[k] for k in rest], 1).reshape(n, 3, -1).transpose(0, 2, 1)
        splats["shN"] = f(coeffs)
    return splats


def sh_degree_of(splats: dict[str, Tensor]) -> int:
    k = 1 + (splats["shN"].shape[1] if "shN" in splats else 0)
    return int(round(np.sqrt(k))) - 1
