"""Image metrics: PSNR, SSIM, their masked (DTU-protocol) variants, and LPIPS when its weights are local.

Definitions, for images in [0, 1]:

* PSNR: ``-10 log10(MSE)`` over all pixels and channels.
* SSIM: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5),
  ``C1 = 0.01^2``, ``C2 = 0.03^2``, averaged over the valid (unpadded) window
  positions and the three channels, as in the 3DGS code base and the sparse-view
  papers built on it.
* Masked, two conventions that papers mix (data/anchors/dtu.yaml records which
  one each published number used):

  - ``*_masked``: PSNR over the pixels whose mask is set (the mean squared error
    of the object alone); SSIM and LPIPS on both images composited onto white
    outside the mask;
  - ``*_black``: both images with the background set to black, scored over the
    whole image (background pixels add zero error, so this PSNR is the higher
    of the two by ``-10 log10`` of the mask's share of the image).
* LPIPS (AlexNet) only when the ``lpips`` package and torchvision's AlexNet
  weights are already on disk; otherwise it is reported as unavailable with the
  reason, never estimated.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

# The masked conventions by the names data/anchors/*.yaml give them: the metric keys that measure each, keyed by
# the names of the mask-mean keys (a published number is compared with recon's under its own convention).
CONVENTION_KEYS: dict[str, dict[str, str]] = {
    "mask_mean": {},
    "black_background": {"psnr_masked": "psnr_black", "ssim_masked": "ssim_black", "lpips_masked": "lpips_black"},
}


def psnr(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """PSNR of [H, W, 3] images; with a bool mask [H, W], over the masked pixels only."""
    err = (a - b) ** 2
    if mask is not None:
        err = err[mask]
    mse = float(err.mean())
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


SSIM_WINDOW = 11  # pixels: images smaller than this on a side have no SSIM


def gaussian_1d(size: int = SSIM_WINDOW, sigma: float = 1.5, device=None, dtype=torch.float32) -> Tensor:
    """A normalised Gaussian window [size] of standard deviation ``sigma`` samples, centred."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """SSIM map [B, 3, H-10, W-10] of images [B, 3, H, W] (differentiable; used as a loss too).

    The five local statistics are filtered in one depthwise convolution. (As
    single-channel separable passes, cuDNN's backward pass was 50 times slower
    on an H100: bench/results/profile-ssim-h100.txt.)
    """
    g = gaussian_1d(device=a.device, dtype=a.dtype)
    stats = torch.cat([a, b, a * a, b * b, a * b], 1)
    n = stats.shape[1]
    window = (g[:, None] @ g[None, :]).expand(n, 1, len(g), len(g))
    stats = F.conv2d(stats, window, groups=n)
    mu_a, mu_b, aa, bb, ab = stats.split(a.shape[1], 1)
    var_a = aa - mu_a**2
    var_b = bb - mu_b**2
    cov = ab - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim(a: Tensor, b: Tensor) -> float:
    """SSIM of [H, W, 3] images."""
    return float(ssim_map(a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]).mean())


def composite(image: Tensor, mask: Tensor, background: float) -> Tensor:
    """``image`` [H, W, 3] inside the bool ``mask`` [H, W], ``background`` (0 black, 1 white) outside."""
    m = mask[..., None].to(image.dtype)
    return image * m + background * (1.0 - m)


@lru_cache(maxsize=1)
def _lpips_model():
    """(model, None) when LPIPS can run offline, else (None, reason)."""
    try:
        import lpips  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as exc:
        return None, f"the lpips package is not installed ({exc.name})"
    hub = torch.hub.get_dir()
    import glob
    import os

    if not glob.glob(os.path.join(hub, "checkpoints", "alexnet-owt-*.pth")):
        return None, f"AlexNet weights are not in {hub}/checkpoints (LPIPS needs them; nothing is downloaded)"
    import lpips

    return lpips.LPIPS(net="alex", verbose=False).eval(), None


def lpips_status() -> str | None:
    """None when LPIPS is available, else why not."""
    return _lpips_model()[1]


def lpips(a: Tensor, b: Tensor) -> float | None:
    model, _ = _lpips_model()
    if model is None:
        return None
    model = model.to(a.device)
    with torch.no_grad():
        return float(model(a.permute(2, 0, 1)[None] * 2 - 1, b.permute(2, 0, 1)[None] * 2 - 1).mean())


def image_metrics(render: Tensor, target: Tensor, mask: Tensor | None = None) -> dict[str, float | None]:
    """All metrics of one view: psnr, ssim, lpips and, with a mask, their masked variants."""
    out: dict[str, float | None] = {"psnr": psnr(render, target), "ssim": ssim(render, target),
                                    "lpips": lpips(render, target)}
    if mask is not None and bool(mask.any()):
        a, b = composite(render, mask, 1.0), composite(target, mask, 1.0)
        out.update(psnr_masked=psnr(render, target, mask), ssim_masked=ssim(a, b), lpips_masked=lpips(a, b))
        a, b = composite(render, mask, 0.0), composite(target, mask, 0.0)
        out.update(psnr_black=psnr(a, b), ssim_black=ssim(a, b), lpips_black=lpips(a, b))
        # SpaRe's SSIM-M / LPIPS-M: both images cropped to the mask's tight bounding box.
        rows, cols = torch.nonzero(mask.any(1)), torch.nonzero(mask.any(0))
        box = (slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
        if min(box[0].stop - box[0].start, box[1].stop - box[1].start) >= 11:  # the SSIM window
            out.update(ssim_box=ssim(render[box], target[box]), lpips_box=lpips(render[box], target[box]))
    return out


def mean_metrics(per_view: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Mean of each metric over views (None where a metric is unavailable)."""
    keys = {k for m in per_view for k in m}
    out: dict[str, float | None] = {}
    for k in sorted(keys):
        values = [v for m in per_view if (v := m.get(k)) is not None]
        out[k] = float(sum(values) / len(values)) if values else None
    return out
