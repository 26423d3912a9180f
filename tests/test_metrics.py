"""Image metrics agree with their standard definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from recon.metrics.images import composite, image_metrics, mean_metrics, psnr, ssim


def test_ssim_matches_scikit_image_with_a_gaussian_window():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(60, 80, 3, generator=g, dtype=torch.float64)
    b = (a + 0.1 * torch.randn(60, 80, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    expected = structural_similarity(a.numpy(), b.numpy(), gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=1.0, channel_axis=2)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-10)
    assert ssim(a, a) == pytest.approx(1.0)


def test_psnr_and_the_masked_protocol():
    a = torch.zeros(20, 20, 3)
    b = torch.full((20, 20, 3), 0.1)
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-5)
    mask = torch.zeros(20, 20, dtype=torch.bool)
    mask[:10] = True
    b[10:] = 0.9  # errors outside the mask do not count
    assert psnr(a, b, mask) == pytest.approx(20.0, abs=1e-5)
    white = composite(a, mask, 1.0)
    assert float(white[15, 3, 0]) == 1.0 and float(white[2, 3, 0]) == 0.0
    m = image_metrics(a, b, mask)
    assert m["psnr_masked"] == pytest.approx(20.0, abs=1e-5) and m["psnr"] < 10
    assert m["lpips"] is None or math.isfinite(m["lpips"])


def test_both_masked_conventions_on_a_hand_made_pair():
    """Mask over a quarter of the image; inside it the render is off by 0.1, outside by 0.5."""
    truth = torch.full((16, 16, 3), 0.5)
    render = torch.full((16, 16, 3), 1.0)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[:8, :8] = True
    render[:8, :8] = 0.6
    m = image_metrics(render, truth, mask)
    assert m["psnr_masked"] == pytest.approx(20.0, abs=1e-4)  # MSE 0.01 over the object's pixels
    # Background black in both: the background agrees, MSE = 0.01 / 4 over the whole image.
    assert m["psnr_black"] == pytest.approx(20.0 + 10 * math.log10(4), abs=1e-4)
    assert m["psnr"] == pytest.approx(-10 * math.log10((0.01 + 0.25 * 3) / 4), abs=1e-4)


def test_mean_metrics_skips_unavailable_values():
    out = mean_metrics([{"psnr": 20.0, "lpips": None}, {"psnr": 30.0, "lpips": None}])
    assert out == {"lpips": None, "psnr": 25.0}
    assert np.isfinite(out["psnr"])


def test_box_metrics_see_only_the_mask_bounding_box():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(40, 60, 3, generator=g)
    render = torch.rand(40, 60, 3, generator=g)
    mask = torch.zeros(40, 60, dtype=torch.bool)
    mask[10:30, 15:45] = True
    render[10:30, 15:45] = target[10:30, 15:45]  # right inside the box, wrong outside it
    m = image_metrics(render, target, mask)
    assert m["ssim_box"] == pytest.approx(1.0, abs=1e-6) and m["ssim"] < 0.5
    tiny = torch.zeros(40, 60, dtype=torch.bool)
    tiny[5:8, 5:8] = True  # smaller than SSIM's window: no box metrics rather than a wrong one
    assert "ssim_box" not in image_metrics(render, target, tiny)
