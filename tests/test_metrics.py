"""Image metrics agree with their standard definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from recon.eval.images import composite_white, image_metrics, mean_metrics, psnr, ssim


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
    white = composite_white(a, mask)
    assert float(white[15, 3, 0]) == 1.0 and float(white[2, 3, 0]) == 0.0
    m = image_metrics(a, b, mask)
    assert m["psnr_masked"] == pytest.approx(20.0, abs=1e-5) and m["psnr"] < 10
    assert m["lpips"] is None or math.isfinite(m["lpips"])


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
