"""The exact reference rasterizer, in plain differentiable torch (CPU or GPU).

gsplat has no CPU rasterizer, so recon keeps this one for CPU runs, tests and
tiny scenes, and the GPU tests check gsplat against it. It computes what
gsplat 1.5.3 computes, written for clarity rather than speed: every Gaussian is
evaluated at every pixel its footprint can reach (the footprint bound is
exact: outside it a Gaussian's alpha is below 1/255), front to back in order
of camera depth, with gsplat's rules:

* 3DGS: EWA projection with the Jacobian's x/z and y/z clamped to 1.3x the
  field of view, ``eps2d`` added to the 2D covariance (and, in antialiased
  mode, opacity scaled by the determinant ratio);
* 2DGS: ray-splat intersection in the splat's tangent plane, with the 2D
  low-pass filter ``min(u^2 + v^2, 2 |x - mu|^2)``;
* pixel centres at ``(i + 0.5, j + 0.5)``; ``alpha = min(0.999, o exp(-sigma))``,
  skipped below 1/255; a pixel stops before the Gaussian that would bring its
  transmittance to 1e-4 or below.

Images are processed in 16x16 tiles, each against the Gaussians whose
footprint overlaps it. All tensors share the device and dtype of ``means``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
FILTER_2DGS = 2.0
TILE = 16


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [N, 3, 3] of quaternions [N, 4] (w, x, y, z; normalised here)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(quats.shape[:-1] + (3, 3))


def _camera_space(means: Tensor, viewmats: Tensor) -> Tensor:
    return torch.einsum("cij,nj->cni", viewmats[:, :3, :3], means) + viewmats[:, None, :3, 3]


def project_3dgs(means, quats, scales, opacities, viewmats, Ks, width, height, near, far, eps2d, antialiased):
    """Per camera and Gaussian: 2D means [C, N, 2], conics [C, N, 3], depths, opacities, radii [C, N, 2], valid."""
    mc = _camera_space(means, viewmats)  # [C, N, 3]
    x, y, z = mc.unbind(-1)
    rot = quat_to_rotmat(quats)
    m = rot * scales[:, None, :]
    cov = m @ m.transpose(1, 2)  # [N, 3, 3]
    R = viewmats[:, :3, :3]
    cov_c = torch.einsum("cij,njk,clk->cnil", R, cov, R)  # [C, N, 3, 3]
    fx, fy, cx, cy = Ks[:, 0, 0, None], Ks[:, 1, 1, None], Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    safe_z = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    rz = 1.0 / safe_z
    tx = safe_z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = safe_z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zero = torch.zeros_like(rz)
    J = torch.stack([
        torch.stack([fx * rz, zero, -fx * tx * rz * rz], -1),
        torch.stack([zero, fy * rz, -fy * ty * rz * rz], -1),
    ], -2)  # [C, N, 2, 3]
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    det_orig = cov2d[..., 0, 0] * cov2d[..., 1, 1] - cov2d[..., 0, 1] * cov2d[..., 1, 0]
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    opac = opacities[None].expand_as(z)
    if antialiased:
        opac = opac * torch.sqrt(torch.clamp_min(det_orig / det, 0.0))
    safe_det = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / safe_det, -b / safe_det, a / safe_det], -1)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], -1)
    with torch.no_grad():
        extend = torch.clamp(torch.sqrt(2.0 * torch.log(torch.clamp_min(opac * 255.0, 1.0))), max=3.33)
        radii = torch.stack([torch.ceil(extend * torch.sqrt(a.clamp_min(0))),
                             torch.ceil(extend * torch.sqrt(c.clamp_min(0)))], -1)
        valid = (z >= near) & (z <= far) & (det > 0) & (opac >= ALPHA_MIN)
        valid &= (radii > 0).any(-1) & _on_image(means2d, radii, width, height)
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)
    return means2d, conics, z, opac, radii, valid


def project_2dgs(means, quats, scales, viewmats, Ks, width, height, near, far):
    """Per camera and surfel: 2D means, ray transforms [C, N, 3, 3], depths, normals (camera), radii, valid."""
    mc = _camera_space(means, viewmats)
    z = mc[..., 2]
    rot = quat_to_rotmat(quats)
    R = viewmats[:, :3, :3]
    rs = torch.einsum("cij,njk->cnik", R, rot)  # camera-space axes of each surfel
    tu = rs[..., 0] * scales[None, :, 0, None]
    tv = rs[..., 1] * scales[None, :, 1, None]
    WH = torch.stack([tu, tv, mc], -1)  # [C, N, 3, 3], columns (t_u, t_v, centre)
    M = torch.einsum("cij,cnjk->cnik", Ks, WH)  # rows M0, M1, M2 map (u, v, 1) to homogeneous pixels
    M0, M1, M2 = M[..., 0, :], M[..., 1, :], M[..., 2, :]
    sign = torch.tensor([1.0, 1.0, -1.0], dtype=means.dtype, device=means.device)
    distance = (sign * M2 * M2).sum(-1)
    safe = torch.where(distance == 0, torch.ones_like(distance), distance)
    f = sign / safe[..., None]
    means2d = torch.stack([(f * M0 * M2).sum(-1), (f * M1 * M2).sum(-1)], -1)
    normal = rs[..., 2]
    normal = normal * torch.where((-normal * mc).sum(-1, keepdim=True) > 0, 1.0, -1.0)
    with torch.no_grad():
        half = means2d * means2d - torch.stack([(f * M0 * M0).sum(-1), (f * M1 * M1).sum(-1)], -1)
        radii = torch.ceil(3.33 * torch.sqrt(torch.clamp_min(half, 1e-4)))
        valid = (z > near) & (z < far) & (distance != 0) & _on_image(means2d, radii, width, height)
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)
    return means2d, M, z, normal, radii, valid


def _on_image(means2d: Tensor, radii: Tensor, width: int, height: int) -> Tensor:
    x, y = means2d[..., 0], means2d[..., 1]
    rx, ry = radii[..., 0], radii[..., 1]
    return (x + rx > 0) & (x - rx < width) & (y + ry > 0) & (y - ry < height)


def composite(alpha: Tensor, channels: Tensor, depth: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Front-to-back blending of [P, n] alphas (depth-sorted; 0 where skipped).

    Returns (weights [P, n], colour [P, D], accumulated alpha [P], median depth
    [P], L1 depth distortion [P]).
    """
    one_minus = 1.0 - alpha
    t_incl = torch.cumprod(one_minus, dim=1)
    t_excl = torch.cat([torch.ones_like(t_incl[:, :1]), t_incl[:, :-1]], dim=1)
    keep = t_incl > T_MIN  # the Gaussian that would end the pixel, and all after it, are left out
    weights = alpha * t_excl * keep
    color = weights @ channels
    acc = weights.sum(1)
    accepted = keep & (alpha > 0) & (t_excl > 0.5)
    last = torch.where(accepted, torch.arange(alpha.shape[1], device=alpha.device), -1).max(dim=1).values
    median = torch.where(last >= 0, depth[last.clamp_min(0)], torch.zeros_like(acc))
    vis_depth = weights * depth[None]
    before = torch.cumsum(vis_depth, dim=1) - vis_depth
    distort = 2.0 * (weights * (depth[None] * (1.0 - t_excl) - before)).sum(1)
    return weights, color, acc, median, distort


def _tiles(width: int, height: int):
    for y0 in range(0, height, TILE):
        for x0 in range(0, width, TILE):
            yield x0, y0, min(x0 + TILE, width), min(y0 + TILE, height)


def _pixel_grid(x0, y0, x1, y1, like: Tensor) -> Tensor:
    ys, xs = torch.meshgrid(torch.arange(y0, y1, dtype=like.dtype, device=like.device),
                            torch.arange(x0, x1, dtype=like.dtype, device=like.device), indexing="ij")
    return torch.stack([xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5], -1)


def rasterize(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmats: Tensor, Ks: Tensor, width: int, height: int, *, kind: str = "3dgs",
    near: float = 0.01, far: float = 1e10, eps2d: float = 0.3, antialiased: bool = False,
    backgrounds: Tensor | None = None,
) -> dict:
    """Render C cameras; returns images and the per-Gaussian info the densification strategies read.

    Args:
        means [N, 3], quats [N, 4] (w, x, y, z), scales [N, 3] (activated; 2DGS
        uses the first two), opacities [N] (activated), colors [N, D] or
        [C, N, D] (activated), viewmats [C, 4, 4] world-to-camera, Ks [C, 3, 3],
        backgrounds [C, D] or None.

    Returns a dict with ``colors`` [C, H, W, D], ``alphas`` [C, H, W, 1],
    ``depths`` [C, H, W, 1] (expected camera depth of the Gaussian centres),
    ``median_depths`` [C, H, W, 1], for 2DGS also ``normals`` [C, H, W, 3]
    (camera frame) and ``distortion`` [C, H, W, 1], and ``info`` with
    ``means2d`` [C, N, 2], ``radii`` [C, N, 2], ``width``, ``height``,
    ``n_cameras`` and ``gaussian_ids`` (None: not packed).
    """
    C, N = viewmats.shape[0], means.shape[0]
    if kind == "3dgs":
        means2d, conics, depths, opac, radii, valid = project_3dgs(
            means, quats, scales, opacities, viewmats, Ks, width, height, near, far, eps2d, antialiased)
    elif kind == "2dgs":
        means2d, M, depths, normals, radii, valid = project_2dgs(means, quats, scales, viewmats, Ks, width, height,
                                                                 near, far)
        opac = opacities[None].expand(C, N)
        with torch.no_grad():  # the 2D filter can reach beyond the 3.33-sigma box of a small splat
            log_opacity = torch.log(torch.clamp_min(opac * 255.0, 1.0))
            reach = torch.ceil(torch.sqrt(torch.clamp_min(log_opacity / (FILTER_2DGS / 2), 0.0)))
            footprint = torch.maximum(radii.to(means.dtype), reach[..., None])
            valid = valid & (opac >= ALPHA_MIN)
    else:
        raise ValueError(f"kind must be 3dgs or 2dgs, got {kind}")
    if kind == "3dgs":
        footprint = radii.to(means.dtype)
    colors = colors if colors.dim() == 3 else colors[None].expand(C, -1, -1)
    D = colors.shape[-1]
    dtype, device = means.dtype, means.device
    if backgrounds is None:
        out_rgb = torch.zeros(C, height, width, D, dtype=dtype, device=device)
    else:
        out_rgb = backgrounds[:, None, None, :].to(dtype).expand(C, height, width, D).clone()
    out_alpha = torch.zeros(C, height, width, 1, dtype=dtype, device=device)
    out_depth = torch.zeros(C, height, width, 1, dtype=dtype, device=device)
    out_median = torch.zeros(C, height, width, 1, dtype=dtype, device=device)
    out_normal = torch.zeros(C, height, width, 3, dtype=dtype, device=device) if kind == "2dgs" else None
    out_distort = torch.zeros(C, height, width, 1, dtype=dtype, device=device) if kind == "2dgs" else None

    for c in range(C):
        ids = torch.nonzero(valid[c]).squeeze(1)
        ids = ids[torch.argsort(depths[c, ids].detach(), stable=True)]
        m2d, fp = means2d[c, ids], footprint[c, ids]
        for x0, y0, x1, y1 in _tiles(width, height):
            with torch.no_grad():
                hit = ((m2d[:, 0] + fp[:, 0] > x0) & (m2d[:, 0] - fp[:, 0] < x1)
                       & (m2d[:, 1] + fp[:, 1] > y0) & (m2d[:, 1] - fp[:, 1] < y1))
            sel = ids[hit]
            if sel.numel() == 0:
                continue
            pix = _pixel_grid(x0, y0, x1, y1, means)
            delta = means2d[c, sel][None] - pix[:, None]  # [P, n, 2]
            if kind == "3dgs":
                con = conics[c, sel]
                sigma = (0.5 * (con[:, 0] * delta[..., 0] ** 2 + con[:, 2] * delta[..., 1] ** 2)
                         + con[:, 1] * delta[..., 0] * delta[..., 1])
                ok = sigma >= 0
            else:
                m = M[c, sel]
                h_u = pix[:, 0, None, None] * m[None, :, 2] - m[None, :, 0]
                h_v = pix[:, 1, None, None] * m[None, :, 2] - m[None, :, 1]
                cross = torch.linalg.cross(h_u, h_v, dim=-1)
                cz = cross[..., 2]
                ok = cz != 0
                cz = torch.where(ok, cz, torch.ones_like(cz))
                s2 = (cross[..., 0] / cz) ** 2 + (cross[..., 1] / cz) ** 2
                sigma = 0.5 * torch.minimum(s2, FILTER_2DGS * (delta ** 2).sum(-1))
                ok = ok & (sigma >= 0)
            alpha = torch.clamp(opac[c, sel][None] * torch.exp(-sigma), max=ALPHA_MAX)
            alpha = torch.where(ok & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
            d = depths[c, sel]
            channels = torch.cat([colors[c, sel], d[:, None]] + ([normals[c, sel]] if kind == "2dgs" else []), -1)
            _, blended, acc, median, distort = composite(alpha, channels, d)
            shape = (y1 - y0, x1 - x0)
            rgb = blended[:, :D]
            if backgrounds is not None:
                rgb = rgb + (1.0 - acc)[:, None] * backgrounds[c][None]
            out_rgb[c, y0:y1, x0:x1] = rgb.reshape(shape + (D,))
            out_alpha[c, y0:y1, x0:x1] = acc.reshape(shape + (1,))
            out_depth[c, y0:y1, x0:x1] = blended[:, D : D + 1].reshape(shape + (1,))
            out_median[c, y0:y1, x0:x1] = median.reshape(shape + (1,))
            if out_normal is not None and out_distort is not None:  # 2DGS
                out_normal[c, y0:y1, x0:x1] = blended[:, D + 1 :].reshape(shape + (3,))
                out_distort[c, y0:y1, x0:x1] = distort.reshape(shape + (1,))

    out: dict[str, Any] = {
        "colors": out_rgb,
        "alphas": out_alpha,
        "depths": out_depth / out_alpha.clamp_min(1e-10),
        "median_depths": out_median,
        "info": {"means2d": means2d, "radii": radii, "width": width, "height": height, "n_cameras": C,
                 "gaussian_ids": None, "depths": depths},
    }
    if kind == "2dgs":
        out["normals"] = out_normal
        out["distortion"] = out_distort
        out["info"]["gradient_2dgs"] = means2d
    return out
