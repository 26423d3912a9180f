"""Losses and sparse-view regularisers of the optimize stage.

Image tensors are [C, H, W, 3], depths and alphas [C, H, W, 1], cameras as in
recon/render/__init__.py. Each regulariser is a plain function; the stage
switches them on from the config.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.metrics.images import gaussian_1d, ssim_map
from recon.render import depth_to_points, image_pixels, rigid_inverse


def photometric(render: Tensor, target: Tensor, ssim_weight: float) -> Tensor:
    """(1 - w) L1 + w (1 - SSIM), the 3DGS loss."""
    l1 = (render - target).abs().mean()
    if ssim_weight == 0:
        return l1
    s = ssim_map(render.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2)).mean()
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - s)


def blur(images: Tensor, sigma: float) -> Tensor:
    """Images [C, H, W, 3] blurred by a Gaussian of standard deviation ``sigma`` pixels (separable, edges reflected;
    the kernel reaches 3 sigma, at most to the image's edge)."""
    radius = min(math.ceil(3 * sigma), images.shape[1] - 1, images.shape[2] - 1)
    if sigma <= 0 or radius < 1:
        return images
    g = gaussian_1d(2 * radius + 1, sigma, device=images.device, dtype=images.dtype)
    x = F.pad(images.permute(0, 3, 1, 2), (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return x.permute(0, 2, 3, 1)


def lit(images: Tensor, low: float = 0.02, high: float = 0.08) -> Tensor:
    """How far each pixel of images [..., H, W, 3] is from black, [..., H, W, 1] in [0, 1]: 0 where its brightest
    channel is below ``low``, 1 above ``high``, linear between."""
    return ((images.amax(-1, keepdim=True) - low) / (high - low)).clamp(0, 1)


def depth_agreement(depth: Tensor, target: Tensor, confidence: Tensor) -> Tensor:
    """Confidence-weighted mean of |depth / target - 1| over the pixels with a target (depths [H, W], target 0 where
    unknown, confidence [H, W] in [0, 1]); 0 when no pixel has one."""
    known = (target > 0).to(depth.dtype) * confidence
    error = (depth / target.clamp_min(1e-8) - 1).abs()
    return (error * known).sum() / known.sum().clamp_min(1e-8)


def anisotropy(log_scales: Tensor, max_ratio: float) -> Tensor:
    """Mean over splats of how far log(longest / shortest axis) exceeds log(max_ratio); log_scales [N, A]."""
    spread = log_scales.max(1).values - log_scales.min(1).values
    return F.relu(spread - math.log(max_ratio)).mean()


def opacity_entropy(logits: Tensor) -> Tensor:
    """Mean binary entropy (nats) of the opacities sigmoid(logits) [N]: zero at 0 and 1, largest at 0.5."""
    p = torch.sigmoid(logits)
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)).mean()


def decayed_opacity(logits: Tensor, share: float) -> Tensor:
    """The logits [N] of opacities ``share`` lower: sigmoid(result) = (1 - share) * sigmoid(logits), finite for any
    logit (Binocular3DGS's opacity decay, applied after each step)."""
    # log p' - log(1 - p') with p' = (1 - share) p, where 1 - p' = sigmoid(-x) + share sigmoid(x): no clamping.
    kept = math.log1p(-share) + F.logsigmoid(logits)
    gone = torch.logaddexp(F.logsigmoid(-logits), math.log(share) + F.logsigmoid(logits)) if share > 0 else \
        F.logsigmoid(-logits)
    return kept - gone


def unmatched(points: Tensor, others: Tensor, distance: float) -> Tensor:
    """Bool [N]: the points [N, 3] with no point of ``others`` [M, 3] in the 3x3x3 block of grid cells of side
    ``distance`` around their own cell (so none nearer than ``distance``, and a match is never farther than
    2 sqrt(3) ``distance``): CoR-GS's co-pruning test between two sets of splats, in O((N + M) log M)."""
    if len(others) == 0:
        return torch.ones(len(points), dtype=torch.bool, device=points.device)
    limit = 2**20 - 2  # cells per axis on each side of the origin that fit 21 bits with their neighbours

    def cells(p: Tensor) -> Tensor:
        return torch.floor(p / distance).clamp(-limit, limit).long()

    def keys(c: Tensor) -> Tensor:
        c = c + 2**20
        return (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]

    occupied = torch.unique(keys(cells(others)))  # sorted
    base = cells(points)
    found = torch.zeros(len(points), dtype=torch.bool, device=points.device)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                k = keys(base + torch.tensor([dx, dy, dz], device=points.device))
                at = torch.searchsorted(occupied, k).clamp_max(len(occupied) - 1)
                found |= occupied[at] == k
    return ~found


def depth_smoothness(depth: Tensor, image: Tensor, alpha: Tensor, scale: float) -> Tensor:
    """Edge-aware total variation of depth (in units of ``scale``) where the render is opaque."""
    d = depth[..., 0] / scale
    w = alpha[..., 0].detach() > 0.5
    gx = (image[:, :, 1:] - image[:, :, :-1]).abs().mean(-1)
    gy = (image[:, 1:] - image[:, :-1]).abs().mean(-1)
    tx = (d[:, :, 1:] - d[:, :, :-1]).abs() * torch.exp(-10 * gx) * (w[:, :, 1:] & w[:, :, :-1])
    ty = (d[:, 1:] - d[:, :-1]).abs() * torch.exp(-10 * gy) * (w[:, 1:] & w[:, :-1])
    return tx.mean() + ty.mean()


def normal_consistency(normals: Tensor, depth_normals: Tensor, alpha: Tensor) -> Tensor:
    """2DGS: 1 - <rendered normal, normal of the rendered depth>, weighted by opacity."""
    return (alpha[..., 0].detach() - (normals * depth_normals * alpha.detach()).sum(-1)).mean()


def rotation_about(axis: Tensor, angle: float) -> Tensor:
    axis = axis / axis.norm()
    K = torch.zeros(3, 3, dtype=axis.dtype, device=axis.device)
    K[0, 1], K[0, 2], K[1, 2] = -axis[2], axis[1], -axis[0]
    K = K - K.T
    return torch.eye(3, dtype=axis.dtype, device=axis.device) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def jitter_camera(viewmat: Tensor, center: Tensor, max_angle: float, generator: torch.Generator) -> Tensor:
    """A pseudo camera: the training camera rotated about ``center`` by up to ``max_angle`` radians.

    The rotation axis is random and perpendicular to the viewing direction, so
    the pseudo camera sees the scene from a nearby point on the same sphere.
    Tensors are small: pass them on the CPU and move the result.
    """
    c2w = rigid_inverse(viewmat)
    view_dir = c2w[:3, 2]
    rnd = torch.randn(3, generator=generator, dtype=viewmat.dtype).to(viewmat.device)
    axis = torch.linalg.cross(view_dir, rnd)
    angle = (torch.rand(1, generator=generator).item() * 2 - 1) * max_angle
    R = rotation_about(axis, angle)
    new = c2w.clone()
    new[:3, :3] = R @ c2w[:3, :3]
    new[:3, 3] = R @ (c2w[:3, 3] - center) + center
    return rigid_inverse(new)


def shift_camera(viewmat: Tensor, center: Tensor, max_shift: float, generator: torch.Generator) -> Tensor:
    """A binocular partner of a camera: moved along its own x axis by a random share of ``max_shift`` times its
    distance to ``center``, to either side, looking the same way. Pass small tensors on the CPU."""
    c2w = rigid_inverse(viewmat)
    distance = (c2w[:3, 3] - center).norm()
    share = torch.rand(1, generator=generator).item() * 2 - 1
    new = c2w.clone()
    new[:3, 3] = c2w[:3, 3] + c2w[:3, 0] * share * max_shift * distance
    return rigid_inverse(new)


def warp_consistency(rgb_p: Tensor, depth_p: Tensor, alpha_p: Tensor, vm_p: Tensor, K_p: Tensor,
                     image_t: Tensor, depth_t: Tensor, vm_t: Tensor, K_t: Tensor, tolerance: float) -> Tensor:
    """L1 between camera p's image and camera t's image carried into p through p's rendered depth.

    Pseudo views: p is a jittered camera (its render) and t the training view (its photo).
    Binocular consistency: p is the training view (its photo, through its rendered depth) and t
    the shifted camera (its render). Shapes: rgb_p [H, W, 3], depth_p / alpha_p [H, W, 1],
    image_t [H, W, 3], depth_t [H, W, 1] (t's rendered depth, detached, for the occlusion
    test). Pixels count where p's render is opaque, lands inside t's image and is not hidden
    there (depths agree within ``tolerance``).
    """
    h, w = rgb_p.shape[:2]
    pts = depth_to_points(depth_p[None], vm_p[None], K_p[None])[0]  # [H, W, 3]
    cam = pts @ vm_t[:3, :3].T + vm_t[:3, 3]
    z = cam[..., 2:3]
    uv = (cam @ K_t.T)[..., :2] / z.clamp_min(1e-6)
    grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], -1)[None]
    warped = F.grid_sample(image_t.permute(2, 0, 1)[None], grid, align_corners=False,
                           padding_mode="border")[0].permute(1, 2, 0)
    seen_depth = F.grid_sample(depth_t.permute(2, 0, 1)[None], grid.detach(), align_corners=False,
                               mode="nearest")[0].permute(1, 2, 0)
    inside = (grid.abs() < 1).all(-1)[0] & (z[..., 0] > 0)
    valid = inside & (alpha_p[..., 0].detach() > 0.5) & ((z - seen_depth).abs()[..., 0].detach() < tolerance)
    return ((rgb_p - warped).abs().mean(-1) * valid).sum() / valid.sum().clamp_min(1)


@torch.no_grad()
def outside_hull(means: Tensor, viewmats: Tensor, Ks: Tensor, masks: Tensor, dilate: int = 2) -> Tensor:
    """Bool [N]: the centre projects into some training view outside its (dilated) object mask."""
    C, H, W = masks.shape
    m = masks.float()[:, None]
    if dilate:
        m = F.max_pool2d(m, 2 * dilate + 1, stride=1, padding=dilate)
    m = m[:, 0] > 0.5
    out = torch.zeros(len(means), dtype=torch.bool, device=means.device)
    for c in range(C):
        px, inside, _ = image_pixels(means, viewmats[c], Ks[c], W, H)
        out |= inside & ~m[c, px[:, 1], px[:, 0]]
    return out


def backdrop_window(width: int) -> int:
    """Side in pixels (odd) of the block :func:`dark_regions` judges an image ``width`` pixels wide by: 1/20 of the
    width, at least 5."""
    return max(5, 2 * (width // 40) + 1)


@torch.no_grad()
def dark_regions(images: Tensor, level: float, window: int) -> Tensor:
    """Bool [C, H, W]: the pixels of images [C, H, W, 3] inside a ``window`` x ``window`` block (odd; clipped at the
    image's edge) whose every pixel's brightest channel is below ``level``: a dark backdrop, not the dark detail of an
    object narrower than the block."""
    dark = (images.amax(-1) < level).float()[:, None]
    pad = window // 2
    lit_near = F.max_pool2d(1 - dark, window, stride=1, padding=pad)  # 1 where a lit pixel is within the block
    return F.max_pool2d(1 - lit_near, window, stride=1, padding=pad)[:, 0] > 0.5


def empty_where(alpha: Tensor, region: Tensor) -> Tensor:
    """Mean rendered opacity (alpha [H, W, 1]) over ``region`` (Bool [H, W]); 0 when the region is empty."""
    weight = region.to(alpha.dtype)
    return (alpha[..., 0] * weight).sum() / weight.sum().clamp_min(1)


@torch.no_grad()
def in_free_space(means: Tensor, viewmats: Tensor, Ks: Tensor, depths: Tensor, margin: float,
                  window: int = 5) -> Tensor:
    """Bool [N]: the centre lies in front of some view's known depth (depths [C, H, W], 0 where unknown) by more than
    ``margin`` times that depth, taking the smallest known depth in the ``window`` x ``window`` block around its pixel
    (so that a splat just beside a near surface's silhouette is not judged by the far one behind it); splats with no
    known depth in their block are not judged."""
    C, H, W = depths.shape
    window = window // 2 * 2 + 1  # odd, so that the block is centred on the pixel
    far = torch.where(depths > 0, depths, torch.full_like(depths, float("inf")))[:, None]
    nearest = -F.max_pool2d(-far, window, stride=1, padding=window // 2)[:, 0]
    free = torch.zeros(len(means), dtype=torch.bool, device=means.device)
    for c in range(C):
        px, inside, z = image_pixels(means, viewmats[c], Ks[c], W, H)
        surface = nearest[c, px[:, 1], px[:, 0]]
        free |= inside & torch.isfinite(surface) & (z < (1 - margin) * surface)
    return free


@torch.no_grad()
def covisibility(points: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int) -> Tensor:
    """[V, V]: how many of ``points`` [N, 3] lie in front of and inside the images of both cameras of each pair (0 on
    the diagonal)."""
    both = torch.stack([image_pixels(points, viewmats[c], Ks[c], width, height)[1]
                        for c in range(len(viewmats))]).float()
    counts = both @ both.T
    return counts.fill_diagonal_(0)
