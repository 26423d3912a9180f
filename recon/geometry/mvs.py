"""Multi-view stereo from the training views: a depth map per view by plane sweep, checked across views, fused.

For every reference view, depth hypotheses are fronto-parallel planes spaced evenly
in inverse depth over the view's ``[near, far]``, as many as it takes for the image
centre to move ``plane_step`` pixels from one plane to the next in the source view
farthest from it (at most ``max_planes``): a wide baseline needs more planes. Besides
fronto-parallel planes, four families lean by ``tilt_degrees`` left, right, up and
down, so that a surface seen at a slant (a table, a wall) still fills the window
with one plane; each pixel takes the best plane of any family. Each plane carries the reference
pixels to its nearest source views, whose grey levels are sampled there; the
photometric score is the normalised cross-correlation (NCC) of the two over a
``window`` x ``window`` patch, which ignores a gain and an offset of the lighting.
Per pixel and plane, the best ``best_sources`` of the sources' scores are averaged
(by default the best half: a point can be hidden from some sources), the best plane
wins, and a parabola through its neighbours refines the inverse depth.

With ``scales`` above 1 the sweep runs again on images halved in size (and halved again): a
pixel whose own scale scores below ``min_score`` takes the depth of the nearest coarser pixel that
scores at least that, a wider patch for faint texture or noisy photos.

A depth is kept only if

* the reference patch has texture (its grey standard deviation is at least
  ``min_texture``): NCC of a flat patch is noise; so is a source's patch that
  is flat where a plane carries the pixel, and that source does not score it;
* its score is at least ``min_score``, and the winner is not among the first or last
  thirty-second of the planes (the true depth may lie outside the range);
* it is geometrically consistent with ``min_consistent`` other views: the point,
  carried into the other view and back through that view's own depth, lands within
  ``max_reprojection`` pixels and ``max_depth_ratio`` of its depth.

The confidence of a kept depth is its score rescaled from ``[min_score, 1]`` to
``[0, 1]``, times the share of the other views that agree. Kept pixels become
world points coloured by their reference image (:func:`fuse`).

Shapes: images [V, H, W, 3] in [0, 1]; cameras as in recon/scene/camera.py
(``viewmats`` [V, 4, 4] world-to-camera, ``Ks`` [V, 3, 3]); depths are z-depths
along the optical axis. Everything is batched torch and runs on the images' device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.render import depth_to_points, image_pixels, pixel_rays, project_points, rigid_inverse


@dataclass(frozen=True)
class StereoSettings:
    """Plane-sweep settings (recon.config.InitConfig holds the user's values)."""

    plane_step: float = 1.0
    max_planes: int = 512
    tilt_degrees: float = 40.0
    window: int = 7
    sources: int = 4
    best_sources: int = 0
    """The score averages this many of the best-scoring sources (0: half of them, rounded up)."""
    min_texture: float = 0.01
    min_score: float = 0.5
    min_consistent: int = 1
    max_reprojection: float = 1.0
    max_depth_ratio: float = 0.01
    scales: int = 1
    """Image scales swept, each half the size of the last: a pixel that scores too low at its own scale takes the
    depth of a coarser one that scores enough (a wider patch, for faint texture); all are checked at full size."""
    chunk_pixels: int = 1 << 23
    """Planes are swept in chunks of about this many plane-pixels (memory against kernel launches)."""


@dataclass
class DepthMaps:
    """Per-view depth [V, H, W] (0 where unknown) and confidence [V, H, W] in [0, 1] (0 where unknown)."""

    depth: Tensor
    confidence: Tensor


def grey(images: Tensor) -> Tensor:
    """Luminance [V, H, W] of RGB images [V, H, W, 3]."""
    return images @ torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)


def textured(images: Tensor, settings: StereoSettings = StereoSettings()) -> Tensor:
    """Pixels [V, H, W] of RGB images [V, H, W, 3] whose ``settings.window`` patch has texture: the only ones stereo
    scores at their own scale."""
    return _has_texture(_patch_moments(grey(images)[:, None], settings.window)[1], settings)


def _patch_moments(g: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """(mean, variance) over each ``window`` x ``window`` patch of grey images [V, 1, H, W]."""
    mean = _box(g, window)
    return mean, (_box(g * g, window) - mean**2).clamp_min(0)


def _has_texture(variance: Tensor, settings: StereoSettings) -> Tensor:
    """[V, H, W] where a patch's grey standard deviation (from its variance [V, 1, H, W]) is at least
    ``settings.min_texture``: NCC of a flatter patch is noise."""
    return variance.sqrt()[:, 0] >= settings.min_texture


def _box(x: Tensor, window: int) -> Tensor:
    """Mean over a ``window`` x ``window`` patch of [B, 1, H, W] (edges replicated).

    On the CPU, where ``avg_pool2d`` adds up every pixel of every window (7x7: 17 of the 29 s that stereo took on
    the bundled example), as differences of running sums along each axis, in double precision so that the means
    agree with it to float32's rounding: a third of the time.
    """
    pad = window // 2
    if x.device.type != "cpu":
        return F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), window, stride=1)
    x = F.pad(x, (pad + 1, pad, pad + 1, pad), mode="replicate").double()  # one more in front: whole windows
    rows = x.cumsum(-1)
    x = rows[..., window:] - rows[..., :-window]
    cols = x.cumsum(-2)
    return ((cols[..., window:, :] - cols[..., :-window, :]) / window**2).float()


def choose_sources(viewmats: Tensor, count: int) -> list[list[int]]:
    """For each view, up to ``count`` other views ordered by the angle between their optical axes (nearest first)."""
    axes = rigid_inverse(viewmats)[:, :3, 2]
    cos = axes @ axes.T
    order = torch.argsort(-cos, dim=1).tolist()
    return [[j for j in row if j != i][:count] for i, row in enumerate(order)]


def _grid(uv: Tensor, width: int, height: int) -> Tensor:
    """grid_sample coordinates of pixel positions (pixel centres at +0.5, align_corners=False)."""
    return torch.stack([uv[..., 0] / width * 2 - 1, uv[..., 1] / height * 2 - 1], -1)


def plane_normals(tilt_degrees: float) -> list[tuple[float, float, float]]:
    """Camera-frame normals of the plane families: fronto-parallel, and (with a tilt) leaning left, right, up, down."""
    if tilt_degrees <= 0:
        return [(0.0, 0.0, 1.0)]
    s, c = math.sin(math.radians(tilt_degrees)), math.cos(math.radians(tilt_degrees))
    return [(0.0, 0.0, 1.0), (s, 0.0, c), (-s, 0.0, c), (0.0, s, c), (0.0, -s, c)]


def plane_sweep(images: Tensor, viewmats: Tensor, Ks: Tensor, near: Tensor, far: Tensor,
                settings: StereoSettings = StereoSettings()) -> tuple[Tensor, Tensor]:
    """(depth [V, H, W], score [V, H, W]) of the best plane per pixel; depth 0 where no plane could be scored.

    ``near`` and ``far`` [V] bound each view's depths (at the image centre, for tilted planes). The score is
    the mean NCC of the best ``settings.best_sources`` sources (by default half), -1 where the pixel has no texture
    or no source sees it.
    """
    V, H, W = images.shape[:3]
    g = grey(images)[:, None]  # [V, 1, H, W]
    win = settings.window
    ref_mean, ref_var = _patch_moments(g, win)
    has_texture = _has_texture(ref_var, settings)
    origins, dirs = pixel_rays(viewmats, Ks, W, H)  # dirs have z = 1 in the camera: points are origin + depth * dir
    depth_out = torch.zeros(V, H, W, device=images.device, dtype=images.dtype)
    score_out = torch.full((V, H, W), -1.0, device=images.device, dtype=images.dtype)
    for r, sources in enumerate(choose_sources(viewmats, settings.sources)):
        if not sources:
            continue
        D = plane_count(origins[r], dirs[r, H // 2, W // 2], near[r], far[r], viewmats[sources], Ks[sources], settings)
        # Camera-frame ray of each pixel (z = 1): a plane of normal n through the centre ray at depth d meets it at
        # depth d * slant, slant = n_z / (n . ray).
        ray = torch.einsum("ij,hwj->hwi", viewmats[r, :3, :3], dirs[r])
        for normal in plane_normals(settings.tilt_degrees):
            n = torch.tensor(normal, dtype=images.dtype, device=images.device)
            slant = n[2] / (ray @ n).clamp_min(1e-6)
            depth, score = _sweep(g, r, sources, origins[r], dirs[r] * slant[..., None], near[r], far[r], D,
                                  ref_mean, ref_var, viewmats, Ks, settings)
            depth = depth * slant
            better = (score > score_out[r]) & (slant > 0.2) & (slant < 5)
            depth_out[r] = torch.where(better, depth, depth_out[r])
            score_out[r] = torch.where(better, score, score_out[r])
        valid = has_texture[r] & (depth_out[r] > 0)
        depth_out[r] = torch.where(valid, depth_out[r], torch.zeros_like(depth_out[r]))
        score_out[r] = torch.where(valid, score_out[r], torch.full_like(score_out[r], -1.0))
    return depth_out, score_out


def _sweep(g: Tensor, r: int, sources: list[int], origin: Tensor, dirs: Tensor, near: Tensor, far: Tensor, D: int,
           ref_mean: Tensor, ref_var: Tensor, viewmats: Tensor, Ks: Tensor,
           settings: StereoSettings) -> tuple[Tensor, Tensor]:
    """One plane family of reference ``r``: (parameter [H, W] such that a pixel's point is origin + it * dirs, score
    [H, W]); the parameter is 0 where the best plane is at the range's ends or nothing scored."""
    H, W = g.shape[2:]
    win = settings.window
    steps = torch.linspace(0, 1, D, device=g.device, dtype=g.dtype)
    inv = 1 / near + steps * (1 / far - 1 / near)  # [D], near first
    keep = min(len(sources), settings.best_sources or max(1, math.ceil(len(sources) / 2)))
    scores = torch.empty(D, H, W, device=g.device, dtype=g.dtype)
    chunk = max(1, settings.chunk_pixels // (H * W))
    for start in range(0, D, chunk):
        d = 1 / inv[start : start + chunk]  # [d]
        points = origin + d[:, None, None, None] * dirs[None]  # [d, H, W, 3]
        per_source = []
        for s in sources:
            uv, z = project_points(points, viewmats[s], Ks[s])
            warped = F.grid_sample(g[s : s + 1].expand(len(d), -1, -1, -1), _grid(uv, W, H),
                                   mode="bilinear", padding_mode="zeros", align_corners=False)
            seen = ((z > 0) & (uv[..., 0] >= 0.5) & (uv[..., 0] <= W - 0.5)
                    & (uv[..., 1] >= 0.5) & (uv[..., 1] <= H - 0.5))
            w_mean, w_var = _patch_moments(warped, win)
            cov = _box(warped * g[r : r + 1], win) - w_mean * ref_mean[r : r + 1]
            ncc = (cov / (w_var * ref_var[r : r + 1]).sqrt().clamp_min(1e-6))[:, 0]
            # A source that does not see the whole patch cannot vouch for it, nor can a flat one: over a blown-out
            # table or a black backdrop the covariance is rounding error, and its ratio to a variance near 0 came
            # out at any value, clamped to a perfect 1 as often as not.
            seen = _box(seen[:, None].to(g.dtype), win)[:, 0] > 0.999
            seen &= _has_texture(w_var, settings)
            per_source.append(torch.where(seen, ncc.clamp(-1, 1), torch.full_like(ncc, -1.0)))
        stacked = torch.stack(per_source)  # [S, d, H, W]
        scores[start : start + len(d)] = stacked.topk(keep, dim=0).values.mean(0)
    best_score, best = scores.max(0)
    # Sub-plane refinement: a parabola through the scores of the best plane and its two neighbours.
    lo, hi = (best - 1).clamp(0, D - 1), (best + 1).clamp(0, D - 1)
    s_lo, s_hi = scores.gather(0, lo[None])[0], scores.gather(0, hi[None])[0]
    curvature = s_lo - 2 * best_score + s_hi
    offset = torch.where(curvature < -1e-6, 0.5 * (s_lo - s_hi) / curvature, torch.zeros_like(curvature))
    position = best.to(g.dtype) + offset.clamp(-0.5, 0.5)
    edge = max(1, D // 32)  # a winner at the range's ends is the range's doing, not the scene's
    inner = (best >= edge) & (best < D - edge) & (best_score > -1)
    inv_best = 1 / near + position / (D - 1) * (1 / far - 1 / near)
    depth = torch.where(inner, 1 / inv_best, torch.zeros_like(inv_best))
    return depth, torch.where(inner, best_score, torch.full_like(best_score, -1.0))


def plane_count(origin: Tensor, direction: Tensor, near: Tensor, far: Tensor, viewmats: Tensor, Ks: Tensor,
                settings: StereoSettings) -> int:
    """Planes for the image-centre ray ``origin + depth * direction`` to move ``plane_step`` pixels per plane in the
    source cameras (``viewmats`` [S, 4, 4], ``Ks`` [S, 3, 3]) that see it move most, within [16, max_planes]."""
    ends = torch.stack([origin + near * direction, origin + far * direction])  # [2, 3]
    travel = 0.0
    for vm, K in zip(viewmats, Ks):
        uv, z = project_points(ends, vm, K)
        if bool((z > 0).all()):
            travel = max(travel, float((uv[0] - uv[1]).norm()))
    return int(min(settings.max_planes, max(16, math.ceil(travel / settings.plane_step) + 1)))


def consistency(depth: Tensor, viewmats: Tensor, Ks: Tensor, settings: StereoSettings = StereoSettings()) -> Tensor:
    """Per pixel, how many other views agree with its depth: [V, H, W] counts (see the module's docstring)."""
    V, H, W = depth.shape
    world = depth_to_points(depth[..., None], viewmats, Ks)  # [V, H, W, 3]
    pix = torch.stack(torch.meshgrid(torch.arange(W, device=depth.device, dtype=depth.dtype) + 0.5,
                                     torch.arange(H, device=depth.device, dtype=depth.dtype) + 0.5, indexing="xy"), -1)
    counts = torch.zeros(V, H, W, device=depth.device, dtype=torch.long)
    for r in range(V):
        points = world[r]
        for j in range(V):
            if j == r:
                continue
            uv, z = project_points(points, viewmats[j], Ks[j])
            d_j = F.grid_sample(depth[j][None, None], _grid(uv, W, H)[None], mode="nearest", padding_mode="zeros",
                                align_corners=False)[0, 0]
            # Back from view j, through its own depth, into view r.
            back = depth_to_world(d_j, uv, viewmats[j], Ks[j])
            uv_r, z_r = project_points(back, viewmats[r], Ks[r])
            error = (uv_r - pix).norm(dim=-1)
            agree = ((depth[r] > 0) & (z > 0) & (d_j > 0) & (error <= settings.max_reprojection)
                     & ((z_r - depth[r]).abs() <= settings.max_depth_ratio * depth[r]))
            counts[r] += agree.long()
    return counts


def depth_to_world(depth: Tensor, uv: Tensor, viewmat: Tensor, K: Tensor) -> Tensor:
    """World points [..., 3] at pixel positions ``uv`` [..., 2] of one camera with z-depths ``depth`` [...]."""
    x = (uv[..., 0] - K[0, 2]) / K[0, 0]
    y = (uv[..., 1] - K[1, 2]) / K[1, 1]
    cam = torch.stack([x, y, torch.ones_like(x)], -1) * depth[..., None]
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    return (cam - t) @ R


def multiscale_sweep(images: Tensor, viewmats: Tensor, Ks: Tensor, near: Tensor, far: Tensor,
                     settings: StereoSettings = StereoSettings()) -> tuple[Tensor, Tensor]:
    """:func:`plane_sweep` at ``settings.scales`` image scales, (depth, score) [V, H, W] at full size: where a pixel's
    own scale scores below ``min_score``, the nearest coarser pixel that scores at least that gives both."""
    depth, score = plane_sweep(images, viewmats, Ks, near, far, settings)
    V, H, W = images.shape[:3]
    for level in range(1, settings.scales):
        h, w = H >> level, W >> level
        if min(h, w) < settings.window:
            break
        small = F.interpolate(images.permute(0, 3, 1, 2), size=(h, w), mode="area").permute(0, 2, 3, 1)
        Ks_small = Ks.clone()
        Ks_small[:, 0] *= w / W
        Ks_small[:, 1] *= h / H
        d, s = (F.interpolate(t[:, None], size=(H, W), mode="nearest")[:, 0]
                for t in plane_sweep(small, viewmats, Ks_small, near, far, settings))
        fill = (score < settings.min_score) & (s >= settings.min_score)
        depth, score = torch.where(fill, d, depth), torch.where(fill, s, score)
    return depth, score


def estimate_depth(images: Tensor, viewmats: Tensor, Ks: Tensor, near: Tensor, far: Tensor,
                   settings: StereoSettings = StereoSettings()) -> DepthMaps:
    """Depth and confidence maps of every view, checked for texture, score, range and cross-view consistency."""
    depth, score = multiscale_sweep(images, viewmats, Ks, near, far, settings)
    depth = torch.where(score >= settings.min_score, depth, torch.zeros_like(depth))
    counts = consistency(depth, viewmats, Ks, settings)
    keep = (counts >= settings.min_consistent) & (depth > 0)
    others = max(1, len(images) - 1)
    confidence = (((score - settings.min_score) / (1 - settings.min_score)).clamp(0, 1)
                  * (counts.float() / others).clamp(max=1))
    return DepthMaps(depth=torch.where(keep, depth, torch.zeros_like(depth)),
                     confidence=torch.where(keep, confidence, torch.zeros_like(confidence)))


def fuse(maps: DepthMaps, images: Tensor, viewmats: Tensor, Ks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(points [N, 3], colours [N, 3], confidence [N]) of every kept pixel of every view."""
    keep = maps.depth > 0
    return depth_to_points(maps.depth[..., None], viewmats, Ks)[keep], images[keep], maps.confidence[keep]


def confirmed(maps: DepthMaps, viewmats: Tensor, Ks: Tensor, points: Tensor, tolerance: float,
              masks: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Of world points [N, 3]: (seen [N], confirmed [N]). A point is seen where it projects into a view (inside its
    mask, with ``masks`` [V, H, W]), and confirmed where a view that sees it kept a depth at its pixel within
    ``tolerance`` (relative) of the point's own."""
    seen = torch.zeros(len(points), dtype=torch.bool, device=points.device)
    agree = torch.zeros_like(seen)
    for inside, depth, z in _kept_depths(maps, viewmats, Ks, points, masks):
        seen |= inside
        agree |= inside & (depth > 0) & ((depth - z).abs() <= tolerance * z)
    return seen, agree


def _kept_depths(maps: DepthMaps, viewmats: Tensor, Ks: Tensor, points: Tensor,
                 masks: Tensor | None = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Per view, of world points [N, 3]: (whether the view sees each, inside its mask with ``masks`` [V, H, W]; the
    depth the view kept at its pixel, 0 for none; the point's own depth in the view), each [N]."""
    views, height, width = maps.depth.shape
    for v in range(views):
        px, inside, z = image_pixels(points, viewmats[v], Ks[v], width, height)
        if masks is not None:
            inside &= masks[v, px[:, 1], px[:, 0]]
        yield inside, torch.where(inside, maps.depth[v, px[:, 1], px[:, 0]], 0), z


def interpolate_depth(maps: DepthMaps) -> Tensor:
    """Depth [V, H, W] at every pixel of each view that kept some, interpolated in inverse depth from the kept ones
    (push-pull over an image pyramid: a pixel takes the mean kept inverse depth of the finest level at which its
    neighbourhood holds one, blended bilinearly between levels); kept depths stay as they are; 0 throughout a view
    that kept none."""
    kept = (maps.depth > 0).float()[:, None]
    inverse = torch.where(maps.depth > 0, 1 / maps.depth.clamp(min=1e-12), 0)[:, None]
    pyramid = [(inverse * kept, kept)]  # sums of kept inverse depth and of kept pixels, level by level
    while max(pyramid[-1][0].shape[-2:]) > 1:  # down to one cell, which holds every kept pixel of its view
        total, count = pyramid[-1]
        kernel = tuple(2 if side > 1 else 1 for side in total.shape[-2:])  # a side of 1 stays
        pyramid.append((F.avg_pool2d(total, kernel, ceil_mode=True), F.avg_pool2d(count, kernel, ceil_mode=True)))
    total, count = pyramid[-1]
    filled = total / count.clamp(min=1e-12)
    for total, count in reversed(pyramid[:-1]):
        coarse = F.interpolate(filled, size=total.shape[-2:], mode="bilinear", align_corners=False)
        filled = torch.where(count > 0, total / count.clamp(min=1e-12), coarse)
    interpolated = torch.where(filled[:, 0] > 0, 1 / filled[:, 0].clamp(min=1e-12), 0)  # 0: the view kept none
    return torch.where(maps.depth > 0, maps.depth, interpolated)


def fill_points(maps: DepthMaps, images: Tensor, viewmats: Tensor, Ks: Tensor, count: int, generator: torch.Generator,
                masks: Tensor | None = None, tolerance: float = 0.05) -> tuple[Tensor, Tensor, int]:
    """World points [N, 3] where stereo kept no depth, their colours [N, 3] (the pixels they were drawn at, of
    ``images`` [V, H, W, 3]), and how many were drawn: up to ``count`` pixels at random from every view's holes
    (inside ``masks`` [V, H, W] where given), placed at the depth :func:`interpolate_depth` gives them. A point that
    would sit in front of a depth another view kept, by more than ``tolerance`` of that depth, is dropped: that view
    sees through the space it would fill."""
    filled = interpolate_depth(maps)
    hole = (maps.depth <= 0) & (filled > 0)
    if masks is not None:
        hole &= masks
    where = hole.flatten().nonzero()[:, 0]
    if count <= 0 or len(where) == 0:
        return images.new_zeros(0, 3), images.new_zeros(0, 3), 0
    pick = where[torch.randperm(len(where), generator=generator)[:count].to(where.device)]
    _, height, width = maps.depth.shape
    v, row, col = pick // (height * width), pick // width % height, pick % width
    points = depth_to_points(filled[..., None], viewmats, Ks)[v, row, col]
    clear = torch.ones(len(pick), dtype=torch.bool, device=images.device)
    for inside, depth, z in _kept_depths(maps, viewmats, Ks, points):
        clear &= ~(inside & (depth > 0) & (z < (1 - tolerance) * depth))
    return points[clear], images[v, row, col][clear], len(pick)
