"""Per-view camera corrections optimised with the splats: an SE(3) twist per view and a shared focal scale.

A view's corrected world-to-camera is ``exp(twist) @ world_to_camera``: the
correction acts in the camera's own frame, rotation in radians and translation
in units of ``scale`` (the scene radius), so one learning rate suits every
scene. The first view's twist is held at zero: it fixes the gauge (the world
frame cannot drift as a whole). Gradients reach the twists through the
rasteriser's gradient with respect to the view matrices (gsplat's or the
reference renderer's autograd).
"""

from __future__ import annotations

import torch
from torch import Tensor

from recon.optim.adam import Adam


def twist_matrix(twist: Tensor) -> Tensor:
    """[N, 6] (rotation w, translation v) -> [N, 4, 4] elements of se(3)."""
    w, v = twist[:, :3], twist[:, 3:]
    zero = torch.zeros_like(w[:, 0])
    rows = [
        torch.stack([zero, -w[:, 2], w[:, 1], v[:, 0]], -1),
        torch.stack([w[:, 2], zero, -w[:, 0], v[:, 1]], -1),
        torch.stack([-w[:, 1], w[:, 0], zero, v[:, 2]], -1),
        torch.zeros_like(twist[:, :4]),
    ]
    return torch.stack(rows, 1)


class PoseCorrection(torch.nn.Module):
    """Twists for ``count`` views (the first fixed unless ``fix_first`` is off) and one log focal scale."""

    def __init__(self, count: int, scale: float, device: torch.device, fix_first: bool = True):
        super().__init__()
        self.twist = torch.nn.Parameter(torch.zeros(count, 6, device=device))
        self.log_focal = torch.nn.Parameter(torch.zeros((), device=device))
        self.free = torch.ones(count, 1, device=device)
        if fix_first:
            self.free[0] = 0.0
        self.focal_entries = torch.diag(torch.tensor([1.0, 1.0, 0.0], device=device))
        self.units = torch.tensor([1.0, 1.0, 1.0, scale, scale, scale], device=device)

    def forward(self, index: Tensor | slice, viewmats: Tensor, Ks: Tensor) -> tuple[Tensor, Tensor]:
        """Corrected ``viewmats`` [B, 4, 4] and ``Ks`` [B, 3, 3] of the views ``index``."""
        twist = (self.twist[index] * self.free[index]) * self.units
        corrected = torch.linalg.matrix_exp(twist_matrix(twist)) @ viewmats
        factor = 1.0 + (torch.exp(self.log_focal) - 1.0) * self.focal_entries  # fx and fy only
        return corrected, Ks * factor

    @torch.no_grad()
    def correct_all(self, viewmats: Tensor, Ks: Tensor) -> tuple[Tensor, Tensor]:
        """Every view corrected."""
        return self.forward(slice(None), viewmats, Ks)


def align_to_image(render_fn, viewmat: Tensor, K: Tensor, target: Tensor, scale: float, steps: int,
                   lr: float) -> Tensor:
    """The world-to-camera [4, 4] near ``viewmat`` whose render best matches ``target`` [H, W, 3] (L1).

    ``render_fn(viewmats [1, 4, 4], Ks [1, 3, 3]) -> [H, W, 3]`` renders frozen splats; only the
    camera's twist is optimised (Adam, ``lr`` decayed 10x over ``steps``).
    """
    correction = PoseCorrection(1, scale, viewmat.device, fix_first=False)
    optimizer = Adam([{"params": correction.twist}], lr=lr)
    for step in range(steps):
        vm, Kc = correction(slice(0, 1), viewmat[None], K[None])
        loss = (render_fn(vm, Kc) - target).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        optimizer.param_groups[0]["lr"] = lr * 0.1 ** ((step + 1) / steps)
    return correction.correct_all(viewmat[None], K[None])[0][0].detach()
