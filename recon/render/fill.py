"""What a render shows where no training view looked: the pixels of a novel camera outside every training view's field
of view, and their empty part filled from the render around them.

Splats exist only where the training photos put them, so a camera that looks past the training views' edges renders
the background there (black), where the world goes on. :func:`unseen` finds those pixels: each pixel's ray, taken to
the render's own depth (where the render is opaque) or to the median of the opaque pixels' depths (where it is empty),
falls outside every training camera's image. :func:`pull_push` extends an image into the pixels it does not cover,
each from the covered ones nearest to it (the pull-push hole filling of image-based rendering: a pyramid of weighted
means, the coarse levels composited behind the fine ones). :func:`fill_unseen` composites that extension behind the
render over the unseen pixels only: a backdrop the training views saw empty stays empty.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.render import depth_to_points, image_pixels


def unseen(depth: Tensor, alpha: Tensor, viewmat: Tensor, K: Tensor, train_viewmats: Tensor, train_Ks: Tensor,
           train_width: int, train_height: int, opaque: float = 0.5) -> Tensor:
    """Bool [H, W]: the pixels of one camera whose point no training camera sees.

    ``depth``, ``alpha`` [H, W, 1]: the render's expected z-depth and alpha; ``viewmat`` [4, 4], ``K`` [3, 3] its
    camera; ``train_viewmats`` [V, 4, 4], ``train_Ks`` [V, 3, 3] the training cameras, whose images are
    ``train_width`` x ``train_height``. A pixel's point lies at its depth where alpha is at least ``opaque``, else at
    the median of the opaque pixels' depths (with none opaque, nothing is called unseen: there is no depth to go by).
    """
    assert depth.shape == alpha.shape and depth.shape[-1] == 1, (depth.shape, alpha.shape)
    assert train_viewmats.shape[1:] == (4, 4) and train_Ks.shape == (len(train_viewmats), 3, 3)
    solid = alpha[..., 0] >= opaque
    if not bool(solid.any()):
        return torch.zeros_like(solid)
    z = torch.where(solid, depth[..., 0], depth[..., 0][solid].median())
    points = depth_to_points(z[None, ..., None], viewmat[None], K[None])[0].reshape(-1, 3)
    seen = torch.zeros(len(points), dtype=torch.bool, device=points.device)
    for vm, k in zip(train_viewmats, train_Ks):
        seen |= image_pixels(points, vm, k, train_width, train_height)[1]
    return ~seen.reshape(z.shape)


def pull_push(image: Tensor, weight: Tensor) -> Tensor:
    """``image`` [H, W, C] extended into the pixels where ``weight`` [H, W] (in [0, 1]) is 0: each level of a pyramid
    holds the weighted mean of the level below; going back up, every level is composited over the coarser one in
    proportion to its weight. Where the weight is 1 the image is kept; with no weight anywhere, zeros."""
    c = (image * weight[..., None]).permute(2, 0, 1)[None]  # [1, C, H, W], weighted
    w = weight[None, None].to(image.dtype)
    levels = [(c, w)]
    while max(c.shape[-2:]) > 1:  # down to one cell: a top level of several would leave empty ones black
        c, w = F.avg_pool2d(c, 2, ceil_mode=True), F.avg_pool2d(w, 2, ceil_mode=True)
        levels.append((c, w))
    c, w = levels[-1]
    fill = c / w.clamp_min(1e-8)
    for c, w in reversed(levels[:-1]):
        under = F.interpolate(fill, size=c.shape[-2:], mode="bilinear", align_corners=False)
        fill = c + under * (1 - w)  # the level's own weighted colour over the coarser extension
    return fill[0].permute(1, 2, 0)


def fill_unseen(rgb: Tensor, alpha: Tensor, hole: Tensor) -> Tensor:
    """``rgb`` [H, W, 3] (on black) with, behind its empty part (1 - ``alpha`` [H, W, 1]) on the pixels of ``hole``
    [H, W] (bool), the extension of the render outside ``hole`` (:func:`pull_push`)."""
    assert rgb.shape[:2] == alpha.shape[:2] == hole.shape and alpha.shape[-1] == 1, (rgb.shape, alpha.shape, hole.shape)
    if not bool(hole.any()) or bool(hole.all()):
        return rgb
    behind = pull_push(rgb, (~hole).to(rgb.dtype))
    return torch.where(hole[..., None], rgb + (1 - alpha) * behind, rgb)
