"""Truncated signed distance fusion of depth maps, in torch (GPU when there is one, same code on CPU).

A dense voxel grid over a cube holds, per voxel, the running weighted mean of
the truncated signed distance ``clamp((depth - z) / trunc, -1, 1)`` seen by
each camera (positive in front of the surface), its weight and a colour.
Voxels are processed in chunks, so memory beyond the grid itself stays
bounded. A pixel with depth 0 says nothing; a pixel whose depth is far
(``inf``) carves free space along its ray. Pixels at a depth discontinuity
(their 3x3 neighbourhood spans more than the truncation: silhouettes, grazing
surfaces) say nothing either, because there one pixel's depth does not hold
for the rays through the rest of it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


class TSDFVolume:
    """A cube of ``resolution^3`` voxels centred on ``center`` with side ``2 * half_size``."""

    def __init__(self, center: np.ndarray, half_size: float, resolution: int, truncation: float | None = None,
                 device: str | torch.device = "cpu", chunk: int = 1 << 21):
        self.device = torch.device(device)
        self.resolution = int(resolution)
        self.voxel = 2.0 * half_size / self.resolution
        self.origin = torch.tensor(np.asarray(center) - half_size + 0.5 * self.voxel, dtype=torch.float32,
                                   device=self.device)
        self.truncation = float(truncation if truncation is not None else 4.0 * self.voxel)
        n = self.resolution ** 3
        self.tsdf = torch.ones(n, device=self.device)
        self.weight = torch.zeros(n, device=self.device)
        self.color = torch.zeros(n, 3, device=self.device)
        self.chunk = chunk

    def _centres(self, start: int, stop: int) -> Tensor:
        idx = torch.arange(start, stop, device=self.device)
        r = self.resolution
        ijk = torch.stack([idx // (r * r), (idx // r) % r, idx % r], -1).float()
        return self.origin + ijk * self.voxel

    @torch.no_grad()
    def integrate(self, depth: Tensor, K: Tensor, world_to_camera: Tensor, color: Tensor | None = None,
                  weight: float = 1.0) -> None:
        """Fuse one z-depth map [H, W] (0 = unknown, inf = free) seen by a camera (K [3, 3], world_to_camera [4, 4])."""
        depth = depth.to(self.device, torch.float32)
        H, W = depth.shape
        padded = torch.nn.functional.pad(depth[None, None], (1, 1, 1, 1), mode="replicate")
        high = torch.nn.functional.max_pool2d(padded, 3, stride=1)[0, 0]
        low = -torch.nn.functional.max_pool2d(-padded, 3, stride=1)[0, 0]
        edge = (high - low > self.truncation) & (low < math.inf)
        depth = torch.where(edge, torch.zeros_like(depth), depth)
        world_to_camera = world_to_camera.to(self.device, torch.float32)
        R, t = world_to_camera[:3, :3], world_to_camera[:3, 3]
        K = K.to(self.device, torch.float32)
        col = color.to(self.device, torch.float32) if color is not None else None
        # Dense, branch-free updates of contiguous slices: no host synchronisation inside the loop.
        for start in range(0, self.tsdf.numel(), self.chunk):
            stop = min(start + self.chunk, self.tsdf.numel())
            cam = self._centres(start, stop) @ R.T + t
            z = cam[:, 2]
            u = torch.floor(K[0, 0] * cam[:, 0] / z.clamp_min(1e-9) + K[0, 2]).long()
            v = torch.floor(K[1, 1] * cam[:, 1] / z.clamp_min(1e-9) + K[1, 2]).long()
            inside = (z > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
            pixel = v.clamp(0, H - 1) * W + u.clamp(0, W - 1)
            d = torch.where(inside, depth.reshape(-1)[pixel], torch.zeros_like(z))
            sdf = d - z
            use = inside & (d > 0) & (sdf > -self.truncation)
            value = torch.where(use, torch.clamp(sdf / self.truncation, max=1.0), torch.zeros_like(z))
            w = use.float() * weight
            w_old = self.weight[start:stop]
            w_new = w_old + w
            share = torch.where(use, w / w_new.clamp_min(1e-12), torch.zeros_like(z))  # weight of this observation
            tsdf = self.tsdf[start:stop]
            tsdf += share * (value - tsdf)
            if col is not None:
                c = col.reshape(-1, 3)[pixel]
                colour = self.color[start:stop]
                colour += share[:, None] * (c - colour)
            w_old.copy_(w_new)

    def grids(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tsdf, weight, colour) as numpy arrays [R, R, R] and [R, R, R, 3]."""
        r = self.resolution
        return (self.tsdf.reshape(r, r, r).cpu().numpy(), self.weight.reshape(r, r, r).cpu().numpy(),
                self.color.reshape(r, r, r, 3).cpu().numpy())

    def to_world(self, ijk: np.ndarray) -> np.ndarray:
        """World coordinates [N, 3] of (fractional) voxel indices [N, 3]."""
        return self.origin.cpu().numpy() + ijk * self.voxel

