"""Render Gaussian splats (3DGS or 2DGS) from a batch of cameras: one function, two backends.

:func:`render` takes the raw, optimisable parameters (the dict the
optimiser and gsplat's densification strategies share) and returns RGB,
alpha, expected depth, median depth and, for 2DGS, normals. On CUDA it calls
gsplat 1.5.3 (``rasterization``, ``rasterization_2dgs``); elsewhere, or when
asked, recon's exact reference rasterizer (reference.py).

Parameters (``N`` Gaussians): ``means`` [N, 3]; ``quats`` [N, 4] (w, x, y, z,
not necessarily normalised); ``scales`` [N, 3] as log scales (2DGS uses the
first two); ``opacities`` [N] as logits; ``sh0`` [N, 1, 3] and optionally
``shN`` [N, K-1, 3] spherical-harmonic colour coefficients (see sh.py).
Cameras follow recon/scene/camera.py: ``viewmats`` [C, 4, 4] world-to-camera
(OpenCV), ``Ks`` [C, 3, 3] pixel intrinsics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.render import reference, sh

Backend = Literal["auto", "gsplat", "reference"]
SplatKind = Literal["3dgs", "2dgs"]


@dataclass
class Render:
    """Outputs of :func:`render` for C cameras of H x W pixels."""

    rgb: Tensor  # [C, H, W, 3]
    alpha: Tensor  # [C, H, W, 1]
    depth: Tensor  # [C, H, W, 1] expected camera depth (sum w z / sum w)
    median_depth: Tensor | None  # [C, H, W, 1]; None for 3DGS through gsplat
    normals: Tensor | None = None  # [C, H, W, 3] world frame, 2DGS only
    depth_normals: Tensor | None = None  # [C, H, W, 3] world normals of the depth map, 2DGS only
    distortion: Tensor | None = None  # [C, H, W, 1] 2DGS depth distortion
    info: dict = field(default_factory=dict)  # what gsplat's densification strategies read


def rigid_inverse(T: Tensor) -> Tensor:
    """Inverse of rigid transforms [..., 4, 4] in closed form (no LU, no host synchronisation)."""
    R = T[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = R
    out[..., :3, 3] = -(R @ T[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def resolve_backend(backend: Backend, device: torch.device) -> Backend:
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "reference"
    if backend == "gsplat" and device.type != "cuda":
        raise ValueError("the gsplat backend needs CUDA tensors")
    return backend


def colour_coefficients(splats: dict[str, Tensor]) -> Tensor:
    return torch.cat([splats["sh0"], splats["shN"]], 1) if "shN" in splats else splats["sh0"]


def render(
    splats: dict[str, Tensor], viewmats: Tensor, Ks: Tensor, width: int, height: int, *,
    kind: SplatKind = "3dgs", sh_degree: int = 0, backgrounds: Tensor | None = None,
    backend: Backend = "auto", near: float = 0.01, far: float = 1e10, eps2d: float = 0.3,
    antialiased: bool = False, absgrad: bool = False, distloss: bool = False, colors: Tensor | None = None,
    opacity_scale: Tensor | None = None,
) -> Render:
    """Render the splats from every camera; differentiable with respect to the splats.

    ``backgrounds`` [C, 3] is blended behind the splats. ``absgrad`` and
    ``distloss`` are gsplat options (AbsGS gradients for densification, the
    2DGS distortion output); the reference backend always provides distortion.
    ``colors`` [N, D] replaces the spherical-harmonic colours with arbitrary
    per-splat channels (``rgb`` then has D channels). ``opacity_scale`` [N] multiplies the opacities
    (clamped to 1): 0 leaves a splat out (dropout during training).
    """
    means = splats["means"]
    if len(means) == 0:  # gsplat divides by the number of splats (a process-killing SIGFPE for none)
        return _background_only(viewmats, width, height, kind, backgrounds, colors, means.dtype)
    quats = splats["quats"]
    scales = torch.exp(splats["scales"])
    opacities = torch.sigmoid(splats["opacities"])
    if opacity_scale is not None:
        opacities = (opacities * opacity_scale).clamp(max=1.0)
    use = resolve_backend(backend, means.device)
    if colors is None:
        # View-dependent colours [C, N, 3], evaluated here rather than inside gsplat, whose SH path inverts
        # the view matrices with torch.inverse (a host synchronisation every call).
        campos = rigid_inverse(viewmats)[:, :3, 3]
        dirs = means[None] - campos[:, None]
        coeffs = colour_coefficients(splats)[None].expand(len(viewmats), -1, -1, -1)
        if use == "gsplat":
            from gsplat import spherical_harmonics

            colors = torch.clamp_min(spherical_harmonics(sh_degree, dirs, coeffs) + 0.5, 0.0)
        else:
            colors = sh.evaluate(sh_degree, dirs, coeffs)
    if use == "gsplat":
        return _render_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, kind,
                              backgrounds, near, far, eps2d, antialiased, absgrad, distloss)
    out = reference.rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height, kind=kind,
                              near=near, far=far, eps2d=eps2d, antialiased=antialiased, backgrounds=backgrounds)
    result = Render(rgb=out["colors"], alpha=out["alphas"], depth=out["depths"], median_depth=out["median_depths"],
                    info=out["info"])
    if kind == "2dgs":
        c2w_rot = viewmats[:, :3, :3].transpose(1, 2)
        result.normals = torch.einsum("cij,chwj->chwi", c2w_rot, out["normals"])
        result.depth_normals = depth_to_normals(result.depth, viewmats, Ks)
        result.distortion = out["distortion"]
    return result


def _background_only(viewmats: Tensor, width: int, height: int, kind: SplatKind, backgrounds: Tensor | None,
                     colors: Tensor | None, dtype: torch.dtype) -> Render:
    """What :func:`render` gives for no splats: the background (black without one), alpha and depth 0."""
    C, device = len(viewmats), viewmats.device
    channels = colors.shape[-1] if colors is not None else 3
    rgb = torch.zeros(C, height, width, channels, device=device, dtype=dtype)
    if backgrounds is not None:
        rgb = rgb + backgrounds[:, None, None, :].to(dtype)
    zeros = torch.zeros(C, height, width, 1, device=device, dtype=dtype)
    if kind == "3dgs":
        return Render(rgb=rgb, alpha=zeros, depth=zeros.clone(), median_depth=None)
    normals = torch.zeros(C, height, width, 3, device=device, dtype=dtype)
    return Render(rgb=rgb, alpha=zeros, depth=zeros.clone(), median_depth=zeros.clone(), normals=normals,
                  depth_normals=normals.clone(), distortion=zeros.clone())


def _render_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, kind,
                   backgrounds, near, far, eps2d, antialiased, absgrad, distloss) -> Render:
    import gsplat

    if kind == "3dgs":
        colors, alphas, info = gsplat.rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near, far_plane=far,
            eps2d=eps2d, packed=False, backgrounds=backgrounds, render_mode="RGB+ED",
            absgrad=absgrad, rasterize_mode="antialiased" if antialiased else "classic",
        )
        return Render(rgb=colors[..., :-1], alpha=alphas, depth=colors[..., -1:], median_depth=None, info=info)
    colors, alphas, normals, depth_normals, distort, median, info = gsplat.rasterization_2dgs(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near, far_plane=far,
        eps2d=eps2d, packed=False, backgrounds=backgrounds, render_mode="RGB+ED",
        absgrad=absgrad, distloss=distloss,
    )
    if depth_normals is not None and depth_normals.dim() == 3:  # gsplat squeezes a batch of one
        depth_normals = depth_normals[None]
    return Render(rgb=colors[..., :-1], alpha=alphas, depth=colors[..., -1:], median_depth=median, normals=normals,
                  depth_normals=depth_normals, distortion=distort, info=info)


def compile_kernels(device: torch.device | None = None) -> float:
    """Build and load gsplat's CUDA kernels (3DGS and 2DGS) with a tiny render; the seconds it took (0 without CUDA).

    gsplat compiles them on first use and caches the build per machine; doing it up front keeps the compile out of
    the first scene's seconds, and lets many processes of one machine share one build.
    """
    import time

    if not torch.cuda.is_available():
        return 0.0
    start = time.perf_counter()
    dev = device or torch.device("cuda")
    splats = {"means": torch.zeros(4, 3, device=dev), "scales": torch.full((4, 3), -2.0, device=dev),
              "quats": torch.tensor([[1.0, 0, 0, 0]] * 4, device=dev), "opacities": torch.zeros(4, device=dev),
              "sh0": torch.zeros(4, 1, 3, device=dev)}
    vm = torch.eye(4, device=dev)[None].clone()
    vm[0, 2, 3] = 3.0
    K = torch.tensor([[[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]], device=dev)
    for kind in ("3dgs", "2dgs"):
        render(splats, vm, K, 64, 48, kind=kind).rgb.sum().item()
    torch.cuda.synchronize(dev)
    return time.perf_counter() - start


def pixel_rays(viewmats: Tensor, Ks: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """Ray origins [C, 3] and directions [C, H, W, 3] (unnormalised, z = 1 in the camera) through pixel centres."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=Ks.dtype, device=Ks.device),
                            torch.arange(width, dtype=Ks.dtype, device=Ks.device), indexing="ij")
    fx, fy = Ks[:, 0, 0, None, None], Ks[:, 1, 1, None, None]
    cx, cy = Ks[:, 0, 2, None, None], Ks[:, 1, 2, None, None]
    cam = torch.stack([(xs + 0.5 - cx) / fx, (ys + 0.5 - cy) / fy, torch.ones_like(xs).expand_as(fx * xs)], -1)
    c2w = rigid_inverse(viewmats)
    dirs = torch.einsum("cij,chwj->chwi", c2w[:, :3, :3], cam)
    return c2w[:, :3, 3], dirs


def project_points(points: Tensor, viewmat: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel coordinates [..., 2] (pixel centres at +0.5) and z-depth [...] of world points [..., 3] in one camera
    (``viewmat`` [4, 4] world-to-camera, ``K`` [3, 3])."""
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[..., 2]
    return (cam @ K.T)[..., :2] / z.clamp_min(1e-8)[..., None], z


def image_pixels(points: Tensor, viewmat: Tensor, K: Tensor, width: int,
                 height: int) -> tuple[Tensor, Tensor, Tensor]:
    """Of world points [N, 3] in one camera: the integer pixel (col, row) [N, 2] each falls in (0 where it falls
    outside), whether it lies in front of the camera and inside the image [N], and its z-depth [N]."""
    uv, z = project_points(points, viewmat, K)
    px = torch.nan_to_num(uv).floor().long()
    inside = (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < width) & (px[:, 1] >= 0) & (px[:, 1] < height)
    return torch.where(inside[:, None], px, 0), inside, z


def depth_to_points(depth: Tensor, viewmats: Tensor, Ks: Tensor) -> Tensor:
    """World points [C, H, W, 3] of a z-depth map [C, H, W, 1]."""
    origins, dirs = pixel_rays(viewmats, Ks, depth.shape[2], depth.shape[1])
    return origins[:, None, None] + depth * dirs


def depth_to_normals(depth: Tensor, viewmats: Tensor, Ks: Tensor) -> Tensor:
    """World normals [C, H, W, 3] of a depth map by central differences (zero on the border), facing the camera."""
    p = depth_to_points(depth, viewmats, Ks)
    down = p[:, 2:, 1:-1] - p[:, :-2, 1:-1]
    right = p[:, 1:-1, 2:] - p[:, 1:-1, :-2]
    n = F.normalize(torch.linalg.cross(down, right, dim=-1), dim=-1)
    return F.pad(n, (0, 0, 1, 1, 1, 1))
