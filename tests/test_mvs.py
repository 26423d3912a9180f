"""Multi-view stereo: depth of a textured surface recovered, fused points on it; no texture or a wrong range, no
points."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recon.geometry import mvs
from recon.render import image_pixels, pixel_rays
from recon.scene.camera import intrinsics_matrix, look_at

WALL = torch.tensor([-0.3, 1.0, 0.0])  # the wall y = 0.3 x, facing the cameras


def wall_views(width: int = 64, height: int = 48, views: int = 3, textured: bool = True):
    """Cameras 3 units from a textured wall, 0.25 rad apart: images [V, H, W, 3], viewmats, Ks, true depth, on-wall."""
    g = torch.Generator().manual_seed(0)
    texture = torch.rand(1, 3, 40, 40, generator=g)
    viewmats, Ks = [], []
    for i in range(views):
        angle = (i - (views - 1) / 2) * 0.25
        viewmats.append(look_at(np.array([3 * math.sin(angle), -3 * math.cos(angle), 1.0]), np.zeros(3)))
        Ks.append(intrinsics_matrix(width, width, width / 2, height / 2))
    vm, K = torch.tensor(np.stack(viewmats)).float(), torch.tensor(np.stack(Ks)).float()
    origins, dirs = pixel_rays(vm, K, width, height)
    depth = -(origins[:, None, None] @ WALL) / (dirs @ WALL)  # ray parameter = z-depth (dirs have z = 1)
    points = origins[:, None, None] + depth[..., None] * dirs
    on_wall = (points[..., [0, 2]].abs() < 1.5).all(-1)
    uv = (points[..., [0, 2]] / 1.5).clamp(-1, 1)
    images = F.grid_sample(texture.expand(views, -1, -1, -1), uv, align_corners=False).permute(0, 2, 3, 1)
    if not textured:
        images = torch.full_like(images, 0.5)
    return images, vm, K, depth, on_wall


SETTINGS = mvs.StereoSettings(max_planes=96)


def test_stereo_recovers_the_depth_of_a_textured_wall_and_fuses_points_onto_it():
    images, vm, K, depth, on_wall = wall_views()
    maps = mvs.estimate_depth(images, vm, K, torch.full((3,), 1.5), torch.full((3,), 6.0), SETTINGS)
    kept = maps.depth > 0
    assert (kept & on_wall).sum() > 0.6 * on_wall.sum()  # most of the wall
    error = ((maps.depth - depth).abs() / depth)[kept]
    assert error.median() < 0.005 and torch.quantile(error, 0.95) < 0.03
    assert bool((maps.confidence[kept] > 0).all()) and bool((maps.confidence[~kept] == 0).all())
    points, colours, confidence = mvs.fuse(maps, images, vm, K)
    assert len(points) == int(kept.sum()) and colours.shape == points.shape and len(confidence) == len(points)
    off_wall = (points @ WALL).abs() / WALL.norm()
    # Median within half a percent of the 3-unit viewing distance, nearly all within 2%.
    assert off_wall.median() < 0.015 and torch.quantile(off_wall, 0.95) < 0.06


@pytest.mark.parametrize("case", ["no texture", "wrong range"])
def test_stereo_keeps_few_points_rather_than_wrong_ones(case):
    images, vm, K, depth, _ = wall_views(textured=case != "no texture")
    near, far = (5.0, 9.0) if case == "wrong range" else (1.5, 6.0)
    near, far = torch.full((3,), near), torch.full((3,), far)
    maps = mvs.estimate_depth(images, vm, K, near, far, SETTINGS)
    kept = maps.depth > 0  # the true depths are 2.2 to 4.4; on the right range 3/4 of the pixels keep theirs
    assert kept.float().mean() < 0.05
    assert not bool(kept.any()) or float(maps.confidence[kept].mean()) < 0.3  # and they have little say


def test_the_cross_view_check_keeps_only_what_agrees_within_its_tolerances():
    images, vm, K, _, on_wall = wall_views()
    near, far = torch.full((3,), 1.5), torch.full((3,), 6.0)
    loose = mvs.estimate_depth(images, vm, K, near, far, SETTINGS).depth > 0
    strict = mvs.estimate_depth(images, vm, K, near, far,
                                replace(SETTINGS, max_reprojection=0.05, max_depth_ratio=0.0005)).depth > 0
    assert not bool((strict & ~loose).any())  # the same sweep: a stricter check only takes depths away
    assert (strict & on_wall).sum() < 0.5 * (loose & on_wall).sum()


def test_a_source_too_flat_to_have_texture_scores_no_plane():
    """NCC ignores contrast: a copy of the wall at 1/250 of its contrast (a blown-out table, a black backdrop, where
    only noise varies) would correlate perfectly. Such a source scores nothing, so its noise cannot pull a pixel to a
    wrong plane."""
    images, vm, K, depth, on_wall = wall_views()
    near, far = torch.full((3,), 1.5), torch.full((3,), 6.0)
    _, score = mvs.plane_sweep(images, vm, K, near, far, SETTINGS)
    assert float((score[0][on_wall[0]] >= SETTINGS.min_score).float().mean()) > 0.6  # the wall itself scores
    faint = torch.cat([images[:1], 0.5 + (images[1:] - 0.5) / 250])
    depth_faint, score_faint = mvs.plane_sweep(faint, vm, K, near, far, SETTINGS)
    assert bool((score_faint[0] == -1).all()) and bool((depth_faint[0] == 0).all())


def test_a_surface_one_source_of_three_sees_is_kept_when_the_best_source_scores_it():
    """init.mvs_best_sources 1: two views of the wall and two of something else (noise); each wall view's score
    averages the best half of its three sources by default (one of them noise), the best one with the setting."""
    images, vm, K, depth, on_wall = wall_views(views=4)
    noise = torch.rand(2, *images.shape[1:], generator=torch.Generator().manual_seed(1))
    images = torch.cat([images[:2], noise])
    near, far = torch.full((4,), 1.5), torch.full((4,), 6.0)
    half = mvs.estimate_depth(images, vm, K, near, far, SETTINGS)
    best = mvs.estimate_depth(images, vm, K, near, far, replace(SETTINGS, best_sources=1))
    for v in (0, 1):
        kept_half, kept_best = half.depth[v] > 0, best.depth[v] > 0
        assert kept_half[on_wall[v]].float().mean() < 0.4 < 0.6 < kept_best[on_wall[v]].float().mean()
        assert ((best.depth[v] - depth[v]).abs() / depth[v])[kept_best].median() < 0.005
    assert (best.depth[2:] > 0).float().mean() < 0.02  # the noise views keep next to nothing


def test_a_coarser_scale_fills_in_where_noise_drowns_the_full_size_patches():
    """Photos with heavy independent noise: full-size 7x7 patches score too low for most of the wall; the half-size
    scale, whose patches average the noise, fills in over twice as much, its depths as right."""
    images, vm, K, depth, on_wall = wall_views(128, 96)
    noisy = images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    kept, median = [], []
    for scales in (1, 2):
        maps = mvs.estimate_depth(noisy, vm, K, torch.full((3,), 1.5), torch.full((3,), 6.0),
                                  replace(SETTINGS, scales=scales))
        found = maps.depth > 0
        kept.append(float((found & on_wall).sum() / on_wall.sum()))
        median.append(float(((maps.depth - depth).abs() / depth)[found].median()))
    assert kept[0] < 0.25 and kept[1] > 2 * kept[0]
    assert median[1] < 0.012 and median[1] <= median[0]


def test_plane_count_follows_the_baseline():
    _, vm, K, _, _ = wall_views()
    origins, dirs = pixel_rays(vm, K, 64, 48)
    settings = mvs.StereoSettings(max_planes=10_000)
    near, far = torch.tensor(1.5), torch.tensor(6.0)
    wide = mvs.plane_count(origins[0], dirs[0, 24, 32], near, far, vm[2:], K[2:], settings)
    narrow = mvs.plane_count(origins[0], dirs[0, 24, 32], near, far, vm[1:2], K[1:2], settings)
    assert wide > 1.5 * narrow > 16


def test_window_means_by_running_sums_equal_average_pooling():
    x = torch.rand(5, 1, 33, 45, generator=torch.Generator().manual_seed(0))
    for window in (3, 7, 11):
        pad = window // 2
        pooled = F.avg_pool2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), window, stride=1)
        assert torch.allclose(mvs._box(x, window), pooled, atol=1e-6)


def test_points_on_the_kept_depths_are_confirmed_and_points_off_them_are_not():
    """mvs.confirmed: a point on the wall where a view kept the wall's depth is confirmed; the same point 10% nearer
    the camera is seen but not confirmed; a point where no view kept a depth is seen but not confirmed, and one
    outside every mask is neither."""
    _, vm, K, depth, _ = wall_views()
    kept = depth.clone()
    kept[1:] = 0  # only the first view kept depths, and none in its 8 leftmost columns
    kept[0, :, :8] = 0
    maps = mvs.DepthMaps(kept, (kept > 0).float())
    origins, dirs = pixel_rays(vm, K, 64, 48)
    row, col = 24, torch.tensor([32, 32, 2])
    on = origins[0] + depth[0, row, col, None] * dirs[0, row, col]
    points = torch.cat([on[:1], origins[0] + 0.9 * (on[1:2] - origins[0]), on[2:]])
    seen, agree = mvs.confirmed(maps, vm, K, points, 0.05)
    assert seen.tolist() == [True, True, True] and agree.tolist() == [True, False, False]
    seen, agree = mvs.confirmed(maps, vm, K, points, 0.05, torch.zeros_like(kept, dtype=torch.bool))
    assert not bool(seen.any()) and not bool(agree.any())


def test_depth_interpolated_into_a_hole_lies_on_the_surface_around_it():
    """mvs.interpolate_depth: a hole in the middle of each view's kept depth takes depths within 2% of the wall's
    (inverse depth is linear across a plane); kept depths stay; a view that kept none stays empty."""
    _, vm, K, depth, _ = wall_views()
    kept = depth.clone()
    kept[:, 10:30, 20:44] = 0
    kept[2] = 0
    filled = mvs.interpolate_depth(mvs.DepthMaps(kept, (kept > 0).float()))
    hole = ((filled - depth).abs() / depth)[:2, 10:30, 20:44]
    assert float(hole.max()) < 0.02 and float(hole.median()) < 0.01
    assert torch.equal(filled[:2][kept[:2] > 0], kept[:2][kept[:2] > 0])
    assert not bool(filled[2].any())
    wide = torch.zeros(1, 16, 64)  # a pyramid that ends on a side of 1 before the other
    wide[0, :, :16] = 2.0
    filled = mvs.interpolate_depth(mvs.DepthMaps(wide, (wide > 0).float()))
    assert torch.allclose(filled, torch.full_like(filled, 2.0))


def test_points_filled_into_holes_lie_on_the_surface_unless_another_view_sees_through_them():
    """mvs.fill_points: points drawn in the views' holes lie on the wall, on hole pixels, coloured from the photo;
    masks limit where they are drawn; where one view's depths are 30% short, its hole points float in front of the
    wall the other views kept, and are dropped."""
    images, vm, K, depth, _ = wall_views()
    kept = depth.clone()
    kept[:, 10:30, 20:44] = 0
    maps = mvs.DepthMaps(kept, (kept > 0).float())
    points, colours, drawn = mvs.fill_points(maps, images, vm, K, 300, torch.Generator().manual_seed(0))
    assert drawn == len(points) == 300 and colours.shape == (300, 3) and float(colours.std()) > 0.05
    in_hole = torch.zeros(len(points), dtype=torch.bool)  # each lies on a pixel of a view's hole
    for v in range(3):
        px, inside, _ = image_pixels(points, vm[v], K[v], 64, 48)
        in_hole |= inside & (kept[v, px[:, 1], px[:, 0]] == 0)
    assert bool(in_hole.all())
    off_wall = (points @ WALL).abs() / WALL.norm()
    assert float(off_wall.max()) < 0.06  # 2% of the 3-unit viewing distance
    nothing = torch.zeros_like(kept, dtype=torch.bool)
    assert len(mvs.fill_points(maps, images, vm, K, 300, torch.Generator().manual_seed(0), nothing)[0]) == 0
    left = torch.zeros_like(nothing)
    left[..., :32] = True  # only the left half of each view may be filled
    points, _, drawn = mvs.fill_points(maps, images, vm, K, 300, torch.Generator().manual_seed(0), left)
    in_left_hole = torch.zeros(len(points), dtype=torch.bool)
    for v in range(3):
        px, inside, _ = image_pixels(points, vm[v], K[v], 64, 48)
        in_left_hole |= inside & (kept[v, px[:, 1], px[:, 0]] == 0) & (px[:, 0] < 32)
    assert drawn == len(points) == 300 and bool(in_left_hole.all())
    short = kept.clone()
    short[0] *= 0.7
    short[1:] = depth[1:]  # the other views kept the whole wall: view 0's holes are the only ones
    points, _, drawn = mvs.fill_points(mvs.DepthMaps(short, (short > 0).float()), images, vm, K, 300,
                                       torch.Generator().manual_seed(0))
    assert drawn == 300 and len(points) < 15


def test_coverage_counts_the_kept_depths_inside_the_masks_and_skips_empty_ones():
    from recon.stages.init import coverage

    depth = torch.zeros(2, 4, 5)
    depth[0, :2] = 1.0  # view 0: 10 of 20 pixels
    depth[1, 0, 0] = 1.0  # view 1: 1 of 20
    assert coverage(depth, None) == round((0.5 + 0.05) / 2, 4)
    masks = torch.zeros(2, 4, 5, dtype=torch.bool)
    masks[0, :2, :2] = True  # all 4 masked pixels of view 0 have a depth; view 1's mask is empty
    assert coverage(depth, masks) == 1.0
    assert coverage(depth, masks.float()) == 1.0  # a mask of 0s and 1s counts as one of booleans
    masks[0] = False
    masks[0, 1:3] = True  # rows 1 and 2: 5 of its 10 pixels have a depth
    assert coverage(depth, masks) == 0.5
    assert coverage(depth, torch.zeros_like(masks)) == 0.0
    textured = torch.zeros(2, 4, 5, dtype=torch.bool)
    textured[0, :2] = True  # view 0: texture only where it kept depths; view 1: none, bar its one kept pixel
    assert coverage(depth, None, textured) == 1.0  # a featureless rest does not count against stereo
    textured[0] = True
    assert coverage(depth, None, textured) == round((0.5 + 1.0) / 2, 4)
    assert coverage(depth, masks, textured) == 0.5  # inside the masks as before


def test_texture_is_what_stereo_can_score():
    """A flat backdrop has no texture, a noisy patch has, and a patch half on each has: the pixels stereo scores."""
    from recon.geometry.mvs import StereoSettings, textured

    rng = np.random.default_rng(0)
    images = torch.zeros(1, 40, 40, 3)
    images[0, :, 20:] = torch.from_numpy(rng.uniform(0, 1, (40, 20, 1))).float()  # grey noise on the right half
    mask = textured(images, StereoSettings(window=7))[0]
    assert not mask[:, :17].any() and mask[:, 20:].all() and mask[:, 17:20].all()
    assert textured(images * 0.002, StereoSettings(window=7))[0].sum() == 0  # too faint to score: flat
