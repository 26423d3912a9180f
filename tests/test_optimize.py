"""Init and optimize stages: every regulariser runs, outputs are complete, NaN stops the stage cleanly."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from recon.config import load_config, preset_settings
from recon.errors import InputError, StageError
from recon.io.ply import read_ply, read_points
from recon.optim import regularizers as reg
from recon.pipeline import run_scene
from recon.render.splats import FLAT_LOG_SCALE, init_splats, load_ply, save_ply
from recon.scene.camera import intrinsics_matrix, look_at

TINY = {"views.count": 4}


def tiny(**extra):
    return load_config("tiny", {**TINY, **extra})


def test_default_pipeline_writes_splats_renders_and_metrics(synthetic_scene, tmp_path):
    cfg = tiny(**{"optimize.min_views": 1})
    result = run_scene(synthetic_scene, cfg, tmp_path, until="optimize")
    graph, out = result.graph, result.out_dir
    assert [o.name for o in result.outcomes] == ["import", "views", "poses", "init", "optimize"]
    init = graph.nodes["points/init"]
    assert graph.nodes["metrics/init"].values["source"] == "mvs"  # stereo from the training views
    points, colors = read_points(out / init.path)
    assert len(points) == init.count > 0 and colors.std() > 0.05  # coloured from the images
    node = graph.nodes["gaussians/final"]
    splats = load_ply(out / node.path)
    assert len(splats["means"]) == node.count > 0
    metrics = graph.nodes["metrics/optimize"].values
    assert metrics["backend"] == "reference" and metrics["test_views"] == 8
    for key in ("psnr", "ssim", "psnr_masked", "ssim_masked"):
        assert math.isfinite(metrics[key])
    assert metrics["lpips"] is None and metrics["lpips_status"] != "available"  # never faked
    assert len(list((out / "assets" / "renders").glob("*.png"))) == 8
    losses = json.loads((out / "assets" / "optimize" / "loss.json").read_text())
    assert len(losses["loss"]) == 4 and losses["photometric"][-1] < losses["photometric"][0]
    assert not (out / "assets" / "optimize" / "checkpoint.pt").exists()  # removed after success
    saved = json.loads((out / "metrics.json").read_text())["stages"]
    assert saved["optimize"]["gaussians"] == node.count


def test_2dgs_with_distortion_and_normal_consistency(synthetic_scene, tmp_path):
    cfg = tiny(**{"optimize.kind": "2dgs", "optimize.distortion": 0.1, "optimize.normal_consistency": 0.05})
    graph = run_scene(synthetic_scene, cfg, tmp_path, until="optimize").graph
    assert graph.nodes["gaussians/final"].kind == "2dgs"
    vertex, _ = read_ply(tmp_path / "mug" / "assets" / "splats.ply")
    assert np.allclose(vertex["scale_2"], FLAT_LOG_SCALE)
    assert math.isfinite(graph.nodes["metrics/optimize"].values["psnr_masked"])


def test_dtu_preset_trains_without_masks_and_scores_with_them(synthetic_scene, tmp_path, monkeypatch):
    from recon.stages import optimize

    seen = []

    class Recording(optimize.Trainer):
        def __init__(self, oc, frames, *args, **kwargs):
            seen.append(frames.masks)
            super().__init__(oc, frames, *args, **kwargs)

    monkeypatch.setattr(optimize, "Trainer", Recording)
    cfg = load_config("dtu",
                      {**preset_settings("tiny"), **TINY, "views.split": None, "data.downscale": 1,
                       "optimize.cpu_steps": 5})
    graph = run_scene(synthetic_scene, cfg, tmp_path, until="optimize").graph
    assert seen == [None]  # no masks reach the training loop
    assert graph.nodes["metrics/init"].values["source"] != "hull"  # the masks do not carve the initial points
    assert all(v.mask is not None for v in graph.views("test"))
    assert math.isfinite(graph.nodes["metrics/optimize"].values["psnr_masked"])

    seen.clear()
    cfg = load_config("object", {**preset_settings("tiny"), **TINY, "optimize.cpu_steps": 5})
    run_scene(synthetic_scene, cfg, tmp_path / "object", until="optimize")
    assert seen[0] is not None and seen[0].shape[0] == 4


def test_a_hull_without_masks_falls_back_to_random(synthetic_scene, tmp_path):
    cfg = tiny(**{"data.masks": False, "init.source": "hull", "optimize.steps": 5, "optimize.cpu_steps": 5})
    with pytest.warns(UserWarning, match=r"init.source=hull does not apply .*using random"):
        graph = run_scene(synthetic_scene, cfg, tmp_path, until="optimize").graph
    assert graph.nodes["metrics/init"].values["source"] == "random"
    assert "psnr_masked" not in graph.nodes["metrics/optimize"].values


def test_nan_stops_the_stage_and_keeps_the_last_good_checkpoint(synthetic_scene, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = reg.photometric

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 24 else loss

    monkeypatch.setattr(reg, "photometric", poisoned)
    with pytest.raises(StageError, match=r"step 23 produced a non-finite loss.*checkpoint \(step 20\)"):
        run_scene(synthetic_scene, tiny(), tmp_path, until="optimize")
    checkpoint = tmp_path / "mug" / "assets" / "optimize" / "checkpoint.pt"
    state = torch.load(checkpoint)
    assert state["step"] == 20 and torch.isfinite(state["splats"]["means"]).all()
    # The stages before optimize finished and a rerun resumes from there.
    monkeypatch.setattr(reg, "photometric", original)
    again = run_scene(synthetic_scene, tiny(), tmp_path, until="optimize")
    assert [o.status for o in again.outcomes] == ["reused", "reused", "reused", "reused", "ran"]


def test_blank_training_photos_are_named_in_a_warning():
    import warnings

    from recon.stages.optimize import warn_blank

    images = torch.rand(3, 6, 8, 3)
    images[0] = 0.0
    images[2] = 0.5
    with pytest.warns(UserWarning, match=r"^mug: optimize: training photos a, c are a single colour"):
        warn_blank("mug", ["a", "b", "c"], images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_blank("mug", ["a", "b", "c"], torch.rand(3, 6, 8, 3))


def test_a_run_that_prunes_every_splat_stops_with_one_line():
    """Pruning that removes every splat (here the masks' hull, the masks empty) stops the stage with an error that
    says so, before a render of no splats; so does a run given no splats to start from."""
    from dataclasses import replace

    from recon.optim.trainer import Trainer
    from recon.scene.frames import Frames

    rng = np.random.default_rng(0)
    splats = init_splats(rng.normal(scale=0.3, size=(40, 3)), rng.random((40, 3)), sh_degree=0, init_opacity=0.5)
    viewmats = torch.tensor(np.stack([look_at(np.array([x, -4.0, 1.0]), np.zeros(3)) for x in (0.0, 1.5)]),
                            dtype=torch.float32)
    Ks = torch.tensor(intrinsics_matrix(24, 24, 12, 9), dtype=torch.float32).expand(2, 3, 3)
    frames = Frames(["a", "b"], torch.rand(2, 18, 24, 3), torch.zeros(2, 18, 24, dtype=torch.bool), viewmats, Ks,
                    24, 18)
    oc = replace(load_config("plain").optimize, steps=20, sh_degree=0, hull_prune=True, prune_every=5)
    trainer = Trainer(oc, frames, splats, np.zeros(3), 1.0, torch.device("cpu"), seed=0)
    with pytest.raises(StageError, match=r"step \d+ produced no splats: densification and pruning removed every one"):
        trainer.train()
    assert len(trainer.splats["means"]) == 0 and len(trainer.views_seeing()) == 0  # counted without a render
    assert trainer.prune() == 0
    empty = {k: v[:0] for k, v in splats.items()}
    with pytest.raises(StageError, match=r"optimize \(3dgs, reference\): no initial splats to train"):
        Trainer(oc, frames, empty, np.zeros(3), 1.0, torch.device("cpu"), seed=0)


@pytest.mark.parametrize("setting", [{"optimize.strategy": "mcmc"}, {"optimize.absgrad": True}])
def test_mcmc_and_absgrad_need_cuda_and_fail_before_writing(synthetic_scene, tmp_path, setting):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(InputError, match=r"(mcmc|absgrad) needs CUDA"):
        run_scene(synthetic_scene, tiny(**setting), tmp_path, until="optimize")
    assert not (tmp_path / "mug").exists()


def test_splat_ply_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    splats = init_splats(rng.normal(size=(50, 3)), rng.random((50, 3)), sh_degree=2)
    splats["shN"] = torch.randn_like(splats["shN"])
    splats["quats"] = torch.randn_like(splats["quats"])
    save_ply(tmp_path / "s.ply", splats)
    back = load_ply(tmp_path / "s.ply")
    for key, value in splats.items():
        torch.testing.assert_close(back[key], value)
    vertex, _ = read_ply(tmp_path / "s.ply")
    assert list(vertex)[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert "f_rest_23" in vertex and "f_rest_24" not in vertex  # 8 extra coefficients x 3 channels


def test_warp_consistency_is_zero_for_a_perfect_render_and_positive_otherwise():
    h, w = 30, 40
    vm = torch.tensor(look_at(np.array([0.0, -4.0, 0.0]), np.zeros(3)), dtype=torch.float32)
    K = torch.tensor(intrinsics_matrix(50, 50, 20, 15), dtype=torch.float32)
    image = torch.rand(h, w, 3)
    depth = torch.full((h, w, 1), 4.0)
    alpha = torch.ones(h, w, 1)
    same = reg.warp_consistency(image, depth, alpha, vm, K, image, depth, vm, K, tolerance=0.1)
    assert float(same) < 1e-5
    other = reg.warp_consistency(torch.rand(h, w, 3), depth, alpha, vm, K, image, depth, vm, K, tolerance=0.1)
    assert float(other) > 0.1


def _plane_photo(eye: np.ndarray, K: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(viewmat, photo [H, W, 3], z-depth [H, W, 1]) of a camera at ``eye`` looking at the origin of the textured
    ground plane z = 0."""
    from recon.render import pixel_rays

    vm = torch.tensor(look_at(eye, np.zeros(3)), dtype=torch.float32)
    origin, dirs = pixel_rays(vm[None], K[None], w, h)
    t = -origin[0, 2] / dirs[0, ..., 2]  # along the rays to z = 0
    ground = origin[0] + t[..., None] * dirs[0]
    x, y = ground[..., 0], ground[..., 1]
    photo = torch.stack([0.5 + 0.5 * torch.sin(7 * x) * torch.cos(5 * y), 0.5 + 0.4 * torch.sin(11 * x + 3 * y),
                         0.5 + 0.3 * torch.cos(9 * y - 2 * x)], -1)
    camera_z = ground @ vm[:3, :3].T[:, 2] + vm[2, 3]
    return vm, photo, camera_z[..., None]


def test_cross_view_warp_of_a_real_second_photo_is_least_at_the_true_depth():
    """Two photos of a textured plane: the second carried into the first through the true depth matches it, through
    a depth 5% off it does not; a point the second camera's depth hides is left out."""
    h, w = 60, 80
    K = torch.tensor(intrinsics_matrix(70, 70, 40, 30), dtype=torch.float32)
    vm_a, photo_a, depth_a = _plane_photo(np.array([0.0, -2.0, 3.0]), K, h, w)
    vm_b, photo_b, depth_b = _plane_photo(np.array([0.8, -1.8, 3.0]), K, h, w)
    alpha = torch.ones(h, w, 1)
    true = float(reg.warp_consistency(photo_a, depth_a, alpha, vm_a, K, photo_b, depth_b, vm_b, K, tolerance=0.05))
    off = float(reg.warp_consistency(photo_a, depth_a * 1.05, alpha, vm_a, K, photo_b, depth_b, vm_b, K,
                                     tolerance=0.5))
    assert true < 0.01 and off > 5 * true
    hidden = float(reg.warp_consistency(photo_a, depth_a * 1.05, alpha, vm_a, K, photo_b, depth_b, vm_b, K,
                                        tolerance=0.01))
    assert hidden == 0  # every point lies behind the second camera's depth: none is compared
    depth = depth_a.clone().requires_grad_()
    reg.warp_consistency(photo_a, depth * 1.02, alpha, vm_a, K, photo_b, depth_b, vm_b, K, tolerance=0.5).backward()
    assert torch.isfinite(depth.grad).all() and float(depth.grad.abs().sum()) > 0


def test_cross_view_draws_only_views_that_share_splats_and_have_been_rendered():
    from dataclasses import replace

    from recon.optim.trainer import Trainer
    from recon.scene.frames import Frames

    rng = np.random.default_rng(0)
    splats = init_splats(rng.normal(scale=0.3, size=(80, 3)), rng.random((80, 3)), sh_degree=0, init_opacity=0.5)
    viewmats = torch.tensor(np.stack([look_at(np.array([0.0, -4.0, 1.0]), np.zeros(3)),
                                      look_at(np.array([1.5, -4.0, 1.0]), np.zeros(3)),
                                      look_at(np.array([0.0, 4.0, 1.0]), np.array([0.0, 8.0, 1.0]))]),
                            dtype=torch.float32)  # the third looks away from every splat
    Ks = torch.tensor(intrinsics_matrix(24, 24, 12, 9), dtype=torch.float32).expand(3, 3, 3)
    frames = Frames(["a", "b", "c"], torch.rand(3, 18, 24, 3, generator=torch.Generator().manual_seed(0)), None,
                    viewmats, Ks, 24, 18)
    oc = replace(load_config("default").optimize, sh_degree=0, regularize_from=0, refine_start=1000,
                 cross_view=0.5)
    trainer = Trainer(oc, frames, splats, np.zeros(3), 1.0, torch.device("cpu"), seed=0)
    assert trainer.covisible is not None
    assert trainer.covisible[0, 1] == 80 and trainer.covisible[2].sum() == 0 and trainer.covisible[0, 0] == 0
    assert trainer._cross_view_partner(0) is None  # no view rendered yet
    assert math.isfinite(float(trainer.step(0, 0)))
    assert trainer._cross_view_partner(1) == 0 and trainer._cross_view_partner(0) is None  # b not rendered yet
    assert math.isfinite(float(trainer.step(1, 1)))  # with the term: a is drawn for b
    trainer.rendered[2] = True
    assert {trainer._cross_view_partner(0) for _ in range(20)} == {1} and trainer._cross_view_partner(2) is None


def test_jittered_camera_stays_on_the_sphere_and_looks_at_the_centre():
    vm = torch.tensor(look_at(np.array([0.0, -4.0, 1.0]), np.zeros(3)), dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    center = torch.zeros(3, dtype=torch.float64)
    for _ in range(5):
        new = reg.jitter_camera(vm, center, 0.2, g)
        c2w = torch.linalg.inv(new)
        assert float(c2w[:3, 3].norm()) == pytest.approx(float(torch.linalg.inv(vm)[:3, 3].norm()))
        cam_center = (new[:3, :3] @ center + new[:3, 3])
        assert float(cam_center[:2].norm()) < 1e-9  # the centre stays on the optical axis


def test_outside_hull_flags_points_outside_a_mask():
    vm = torch.tensor(look_at(np.array([0.0, -4.0, 0.0]), np.zeros(3)), dtype=torch.float32)[None]
    K = torch.tensor(intrinsics_matrix(50, 50, 20, 20), dtype=torch.float32)[None]
    masks = torch.zeros(1, 40, 40, dtype=torch.bool)
    masks[0, 15:25, 15:25] = True
    means = torch.tensor([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [30.0, 0.0, 0.0]])
    flags = reg.outside_hull(means, vm, K, masks, dilate=0)
    assert flags.tolist() == [False, True, False]  # the third is outside the image: not judged


def test_a_dark_backdrop_is_pushed_empty_and_dark_detail_is_not():
    images = torch.full((1, 40, 60, 3), 0.6)
    images[0, :15] = 0.03  # a black backdrop across the top
    images[0, 25:35, 20:23] = 0.02  # a dark handle, 3 pixels wide
    dark = reg.dark_regions(images, level=0.1, window=7)
    assert bool(dark[0, :15].all())  # the whole backdrop, its edge included
    assert not bool(dark[0, 15:].any())  # not the lit part, nor the thin dark detail in it
    alpha = torch.full((40, 60, 1), 0.5, requires_grad=True)
    term = reg.empty_where(alpha, dark[0])
    term.backward()
    assert float(term.detach()) == pytest.approx(0.5)
    assert float(alpha.grad[20:].abs().sum()) == 0 and torch.isfinite(alpha.grad).all()
    assert float(reg.empty_where(alpha, torch.zeros(40, 60, dtype=torch.bool))) == 0


def test_free_space_flags_splats_in_front_of_the_stereo_depth_only():
    vm = torch.tensor(look_at(np.array([0.0, -4.0, 0.0]), np.zeros(3)), dtype=torch.float32)[None]
    K = torch.tensor(intrinsics_matrix(50, 50, 20, 20), dtype=torch.float32)[None]
    depths = torch.full((1, 40, 40), 4.0)  # a wall through the origin, facing the camera
    depths[0, :, :10] = 0  # no stereo depth on the left quarter
    depths[0, 18:22, 30:34] = 2.0  # a near patch
    means = torch.tensor([
        [0.0, 0.0, 0.0],  # on the wall: kept
        [0.0, 1.0, 0.0],  # a quarter of the way behind it: kept
        [0.0, -2.0, 0.0],  # halfway to the camera: a floater
        [-0.6, -2.0, 0.0],  # as near, where stereo found nothing (column 5): not judged
        [0.6, -0.5, 0.0],  # in front of the wall, 2 pixels beside the near patch: judged by the patch, kept
        [0.0, -10.0, 0.0],  # behind the camera: not judged
    ])
    flags = reg.in_free_space(means, vm, K, depths, margin=0.05)
    assert flags.tolist() == [False, False, True, False, False, False]
    assert not reg.in_free_space(means, vm, K, torch.zeros(1, 40, 40), margin=0.05).any()
    for window in (13, 12):  # a block reaching 6 pixels over the hole judges the splat in it by the wall beside it
        flags = reg.in_free_space(means, vm, K, depths, margin=0.05, window=window)
        assert flags.tolist() == [False, False, True, True, False, False]


@pytest.mark.gpu
@pytest.mark.parametrize("variant", [
    {},
    {"optimize.min_views": 1},
    {"optimize.kind": "2dgs", "optimize.distortion": 0.1, "optimize.normal_consistency": 0.05},
    {"optimize.strategy": "mcmc", "optimize.mcmc_cap": 30000, "optimize.opacity_reg": 0.01, "optimize.scale_reg": 0.01},
])
def test_gsplat_optimisation_reconstructs_the_held_out_views(tmp_path, variant):
    from recon.resources import DATA_DIR

    cfg = load_config("default", {"views.count": 6, "device": "cuda", "optimize.steps": 1500, **variant})
    graph = run_scene(DATA_DIR / "example", cfg, tmp_path, until="optimize").graph
    metrics = graph.nodes["metrics/optimize"].values
    assert metrics["backend"] == "gsplat"
    assert metrics["psnr_masked"] > 16.0, metrics
    assert metrics["peak_memory_mb"] < 4096


def test_held_out_cameras_can_be_fitted_to_their_photos_before_scoring(synthetic_scene, tmp_path):
    cfg = tiny(**{"optimize.test_pose_align": "on", "optimize.cpu_align_steps": 5})
    metrics = run_scene(synthetic_scene, cfg, tmp_path, until="optimize").graph.nodes["metrics/optimize"].values
    assert set(metrics["unaligned"]["per_view"]) == set(metrics["per_view"]) and len(metrics["per_view"]) == 8
    assert metrics["test_pose_align"]["steps"] == 5 and metrics["test_pose_align"]["rotation_change_deg"] >= 0
    assert math.isfinite(metrics["psnr_masked"]) and math.isfinite(metrics["unaligned"]["psnr_masked"])
    given = tiny().optimize.test_pose_align  # auto: only when the training poses were estimated
    assert given == "auto"
    plain = run_scene(synthetic_scene, tiny(), tmp_path / "given", until="optimize")
    plain = plain.graph.nodes["metrics/optimize"].values
    assert "unaligned" not in plain and "poses" not in plain  # given cameras: neither fitted nor refined


def test_held_out_renders_can_be_filled_where_no_training_view_looked(synthetic_scene, tmp_path):
    metrics = run_scene(synthetic_scene, tiny(**{"optimize.fill_unseen": True}), tmp_path,
                        until="optimize").graph.nodes["metrics/optimize"].values
    assert set(metrics["unfilled"]["per_view"]) == set(metrics["per_view"])
    assert all(0 <= v["unseen"] <= 1 for v in metrics["per_view"].values())
    assert math.isfinite(metrics["psnr"]) and math.isfinite(metrics["unfilled"]["psnr"])
    plain = run_scene(synthetic_scene, tiny(), tmp_path / "plain", until="optimize")
    plain = plain.graph.nodes["metrics/optimize"].values
    assert "unfilled" not in plain and 0 <= plain["unseen"] <= 1  # the share is recorded either way
    assert metrics["unfilled"]["psnr"] == pytest.approx(plain["psnr"], abs=1e-6)  # the same splats, before the fill
    for name, view in metrics["per_view"].items():  # a view whose every pixel some training view sees is not filled
        if view["unseen"] == 0:
            assert view["psnr"] == metrics["unfilled"]["per_view"][name]["psnr"]


def test_stereo_init_and_every_weight_free_regulariser_train_to_finite_results(synthetic_scene, tmp_path):
    switches = {"init.source": "mvs", "init.mvs_min_points": 50, "init.mvs_max_planes": 32, "init.mvs_fill": 0.5,
                "optimize.steps": 12,
                "optimize.cpu_steps": 12, "optimize.refine_start": 100, "optimize.regularize_from": 2,
                "optimize.depth_weight": 0.1, "optimize.anisotropy": 0.1, "optimize.max_anisotropy": 2.0,
                "optimize.opacity_entropy": 0.01, "optimize.dropout": 0.2, "optimize.opacity_decay": 0.005,
                "optimize.binocular": 0.1, "optimize.co_prune": 0.02, "optimize.co_reg": 0.5,
                "optimize.pseudo_views": 0.1, "optimize.depth_smooth": 0.1, "optimize.cross_view": 0.1,
                "optimize.background": "random_unless_black", "optimize.coarse_to_fine": 1.5,
                "optimize.free_space": 0.05,
                "data.train_masks": False}
    graph = run_scene(synthetic_scene, tiny(**switches), tmp_path, until="optimize").graph
    init = graph.nodes["metrics/init"].values
    assert init["source"] == "mvs" and init["mvs"]["points"] >= 50
    depth = graph.nodes["depth/mvs"]
    assert len(depth.views) == 4 and (tmp_path / "mug" / depth.path).is_file()
    assert graph.nodes["points/mvs"].count == init["mvs"]["points"]
    fill = init["mvs"]["fill_points"]  # points in stereo's holes, beside its own
    assert 0 < fill <= round(0.5 * init["mvs"]["points"]) and init["points"] == init["mvs"]["points"] + fill
    metrics = graph.nodes["metrics/optimize"].values
    assert math.isfinite(metrics["psnr"]) and metrics["gaussians"] > 0
    assert metrics["floaters"]["pruned_in_free_space"] >= 0  # judged against the stereo depth (random background:
    assert "dark_backdrop_share" not in metrics["floaters"]  # no dark-backdrop term)
    co = metrics["co_training"]  # the partner set trained and was pruned against (at step 10)
    assert co["partner_gaussians"] > 0 and co["pruned"] >= 0 and co["partner_pruned"] >= 0


def test_one_schedule_scales_to_any_length_and_view_count():
    default = load_config("default").optimize
    long = default.scaled_to(3000)
    assert (long.steps, long.refine_start, long.refine_stop, long.regularize_from, long.sh_degree_interval) == \
        (3000, 300, 2001, 501, 999)
    assert (long.refine_every, long.prune_every, long.checkpoint_every) == \
        (default.refine_every, default.prune_every, default.checkpoint_every)  # intervals are kept
    assert default.scaled_to(default.steps) is default
    # 500 steps per training view, never fewer than 1000, nor more than 3000
    assert [default.for_views(n).steps for n in (2, 3, 4, 6, 9, 49)] == [1000, 1500, 2000, 3000, 3000, 3000]
    assert default.for_views(3) == default.scaled_to(1500)
    fast, quality = load_config("fast").optimize, load_config("quality").optimize
    assert fast == dataclasses.replace(default, steps_per_view=0, dropout=0.2)  # fast: 1000 steps at any count
    assert [quality.for_views(n).steps for n in (3, 9, 49)] == [3000, 9000, 9000]


def test_asking_for_a_number_of_steps_gets_that_many_at_any_view_count(tmp_path):
    for overrides in ({"optimize.steps": 500}, {"optimize": {"steps": 500}}):
        oc = load_config("default", overrides).optimize
        assert oc.steps_per_view == 0 and oc.for_views(9).steps == 500
    kept = load_config("default", {"optimize.steps": 500, "optimize.steps_per_view": 100}).optimize
    assert kept.for_views(9).steps == 900
    preset = tmp_path / "long.yaml"  # a preset file is a layer of its own
    preset.write_text("base: default\noptimize:\n  steps: 2500\n")
    assert load_config(str(preset)).optimize.for_views(9).steps == 2500
    assert load_config("default", {"optimize.lr_means": 1e-4}).optimize.steps_per_view == 500


def test_regularisers_are_zero_where_they_should_be_and_have_finite_gradients():
    log_scales = torch.log(torch.tensor([[1.0, 1.0, 1.0], [20.0, 1.0, 1.0]])).requires_grad_()
    term = reg.anisotropy(log_scales, max_ratio=10.0)
    term.backward()
    assert float(term) == pytest.approx(math.log(2) / 2)  # only the second splat, 2x past the cap
    assert float(log_scales.grad[0].abs().sum()) == 0 and torch.isfinite(log_scales.grad).all()

    logits = torch.tensor([-20.0, 0.0, 20.0], requires_grad=True)
    reg.opacity_entropy(logits).backward()
    assert torch.isfinite(logits.grad).all()
    assert float(reg.opacity_entropy(torch.tensor([0.0]))) == pytest.approx(math.log(2))
    assert float(reg.opacity_entropy(torch.tensor([-30.0, 30.0]))) < 1e-9

    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [5.0, 5.0, 5.0], [-0.05, 0.02, 0.0]])
    partner = torch.tensor([[0.05, 0.0, 0.0], [1.3, 1.0, 1.0]])
    assert reg.unmatched(points, partner, 0.1).tolist() == [False, True, True, False]  # [1.3, 1, 1]: 3 cells away
    assert reg.unmatched(partner, points, 0.1).tolist() == [False, True]
    assert reg.unmatched(points, partner[:0], 0.1).all()  # nothing to match
    cloud = torch.randn(2000, 3)
    assert not reg.unmatched(cloud, cloud + 0.01, 0.05).any()  # every point has its own shifted copy in reach

    logits = torch.tensor([-30.0, -2.0, 0.0, 3.0, 30.0])
    decayed = reg.decayed_opacity(logits, 0.01)
    assert torch.isfinite(decayed).all() and bool((decayed <= logits).all())
    assert torch.allclose(torch.sigmoid(decayed[1:4]), 0.99 * torch.sigmoid(logits[1:4]), rtol=1e-6)
    assert torch.allclose(reg.decayed_opacity(logits[1:4], 0.0), logits[1:4], atol=1e-5)

    target = torch.tensor([[2.0, 0.0], [4.0, 4.0]])  # 0: no stereo depth there
    depth = torch.tensor([[2.0, 9.0], [5.0, 4.0]], requires_grad=True)
    confidence = torch.tensor([[1.0, 1.0], [0.5, 0.0]])
    term = reg.depth_agreement(depth, target, confidence)
    term.backward()
    assert float(term) == pytest.approx(0.25 * 0.5 / 1.5)  # only the pixel off by 25% counts, at half weight
    assert float(depth.grad[0, 1]) == 0 and torch.isfinite(depth.grad).all()
    assert float(reg.depth_agreement(depth, torch.zeros(2, 2), confidence)) == 0


def test_blur_keeps_flat_images_and_spreads_a_point_without_losing_it():
    flat = torch.full((2, 9, 12, 3), 0.3)
    assert torch.allclose(reg.blur(flat, 1.5), flat)
    point = torch.zeros(1, 21, 21, 3)
    point[0, 10, 10] = 1.0
    spread = reg.blur(point.requires_grad_(), 2.0)
    assert spread.shape == point.shape and float(spread.sum()) == pytest.approx(3.0, rel=1e-5)
    assert float(spread[0, 10, 10, 0]) < 0.1 and float(spread[0, 10, 13, 0]) > 0.01  # 1.5 sigma off, still lit
    spread[..., 0].sum().backward()
    assert torch.isfinite(point.grad).all()
    assert reg.blur(point, 0.0) is point
    small = torch.rand(1, 5, 5, 3)  # a kernel wider than the image stops at its edge
    assert torch.allclose(reg.blur(small, 10.0).mean((1, 2)), small.mean((1, 2)), atol=0.05)
    assert float(reg.blur(small, 10.0).std()) < float(small.std())
    assert reg.lit(torch.tensor([[0.0, 0.01, 0.0], [0.05, 0.0, 0.0], [0.0, 0.3, 0.9]])).flatten().tolist() == \
        pytest.approx([0.0, 0.5, 1.0])


def test_a_random_background_unless_black_shows_behind_lit_pixels_only():
    """random_unless_black composites the step's random colour behind the render in proportion to how far each photo
    pixel is from black: on a black photo the step's loss is the black background's; with nothing in view the
    photometric term is that of the colour times the photo's lit weight alone."""
    from dataclasses import replace

    from recon.optim.trainer import Trainer
    from recon.scene.frames import Frames

    rng = np.random.default_rng(0)
    viewmats = torch.tensor(np.stack([look_at(np.array([4.0, 0.0, 1.0]), np.zeros(3))]), dtype=torch.float32)
    Ks = torch.tensor(intrinsics_matrix(24, 24, 12, 9), dtype=torch.float32)[None]
    oc = replace(load_config("default").optimize, sh_degree=0, refine_start=1000, regularize_from=1000, dropout=0.0)
    cpu = torch.device("cpu")

    def first_step(photo: torch.Tensor, background: str, splats: dict, masks: torch.Tensor | None = None) -> Trainer:
        frames = Frames(["a"], photo, masks, viewmats, Ks, 24, 18)
        trainer = Trainer(replace(oc, background=background), frames, splats, np.zeros(3), 1.0, cpu, seed=0)
        trainer.step(0, 0)
        return trainer

    in_view = init_splats(rng.normal(scale=0.3, size=(40, 3)), rng.random((40, 3)), sh_degree=0, init_opacity=0.3)
    black = torch.zeros(1, 18, 24, 3)
    assert float(first_step(black, "random_unless_black", in_view).photometric_sum) == \
        pytest.approx(float(first_step(black, "black", in_view).photometric_sum), abs=1e-7)
    # Nothing in view (every splat behind the camera): the render is the background alone.
    behind = init_splats(rng.normal(scale=0.1, size=(40, 3)) + [8.0, 0.0, 1.0], rng.random((40, 3)), sh_degree=0)
    photo = torch.linspace(0.0, 0.2, 24).view(1, 1, 24, 1).expand(1, 18, 24, 3).contiguous()  # black to lit
    colour = torch.rand(1, 1, 1, 3, generator=torch.Generator().manual_seed(0))  # the trainer's first draw
    expected = reg.photometric(colour * reg.lit(photo), photo, oc.ssim_weight)
    assert float(first_step(photo, "random_unless_black", behind).photometric_sum) == pytest.approx(float(expected))
    assert first_step(photo, "random_unless_black", in_view, torch.ones(1, 18, 24, dtype=torch.bool)).background == \
        "random"  # with masks the mask says what is empty


def test_the_dark_backdrop_term_adds_the_opacity_over_it_and_only_on_black():
    from dataclasses import replace

    from recon.optim.trainer import Trainer
    from recon.scene.frames import Frames

    rng = np.random.default_rng(0)
    viewmats = torch.tensor(np.stack([look_at(np.array([4.0, 0.0, 1.0]), np.zeros(3))]), dtype=torch.float32)
    Ks = torch.tensor(intrinsics_matrix(24, 24, 12, 9), dtype=torch.float32)[None]
    oc = replace(load_config("default").optimize, sh_degree=0, refine_start=1000, regularize_from=1000, dropout=0.0)
    photo = torch.full((1, 18, 24, 3), 0.5)
    photo[:, :, :12] = 0.02  # a black backdrop on the left half
    frames = Frames(["a"], photo, None, viewmats, Ks, 24, 18)
    splats = init_splats(rng.normal(scale=0.3, size=(40, 3)), rng.random((40, 3)), sh_degree=0, init_opacity=0.3)

    def trainer(**change) -> Trainer:
        return Trainer(replace(oc, **change), frames, splats, np.zeros(3), 1.0, torch.device("cpu"), seed=0)

    on, off = trainer(empty_dark=1.0, background="black"), trainer(empty_dark=0.0, background="black")
    assert on.dark is not None and bool(on.dark[0, :, :12].all()) and not bool(on.dark[0, :, 12:].any())
    assert off.dark is None and trainer(empty_dark=1.0, background="random").dark is None  # only on black
    added = float(on.step(0, 0)) - float(off.step(0, 0))
    assert added > 0 and all(bool(torch.isfinite(p).all()) for p in on.splats.values())


def test_depth_smoothness_spares_colour_edges_and_has_finite_gradients():
    image = torch.zeros(1, 8, 8, 3)
    image[:, :, 4:] = 1.0  # a colour edge between columns 3 and 4
    alpha = torch.ones(1, 8, 8, 1)
    flat = torch.full((1, 8, 8, 1), 2.0)
    assert float(reg.depth_smoothness(flat, image, alpha, 1.0)) == 0
    step = flat.clone()
    step[:, :, 4:] = 3.0  # a depth step on the colour edge
    on_edge = float(reg.depth_smoothness(step, image, alpha, 1.0))
    moved = flat.clone()
    moved[:, :, 2:] = 3.0  # the same step where the colour is flat
    assert 0 < on_edge < 1e-3 * float(reg.depth_smoothness(moved, image, alpha, 1.0))
    assert float(reg.depth_smoothness(moved, image, torch.zeros_like(alpha), 1.0)) == 0  # only where opaque
    depth = moved.clone().requires_grad_()
    reg.depth_smoothness(depth, image, alpha, 2.0).backward()
    assert torch.isfinite(depth.grad).all() and float(depth.grad.abs().sum()) > 0


@pytest.mark.parametrize("kind", ["3dgs", "2dgs"])
def test_a_training_view_that_sees_no_splat_trains_on_and_densifies(kind):
    """On the reference rasterizer a view that draws no splat leaves the 2D means without a gradient; the
    densification strategy reads zeros there, as gsplat's kernels give, and the other view's splats still grow."""
    from dataclasses import replace

    from recon.optim.trainer import Trainer
    from recon.scene.frames import Frames

    rng = np.random.default_rng(0)
    splats = init_splats(rng.normal(scale=0.5, size=(60, 3)), rng.random((60, 3)), sh_degree=0, init_opacity=0.5)
    eye = np.array([4.0, 0.0, 1.0])
    viewmats = torch.tensor(np.stack([look_at(eye, np.zeros(3)), look_at(eye, np.array([8.0, 0.0, 1.0]))]),
                            dtype=torch.float32)  # the second looks away from every splat
    Ks = torch.tensor(intrinsics_matrix(24, 24, 12, 9), dtype=torch.float32).expand(2, 3, 3)
    frames = Frames(["a", "b"], torch.rand(2, 18, 24, 3, generator=torch.Generator().manual_seed(0)), None,
                    viewmats, Ks, 24, 18)
    oc = replace(load_config("default").optimize, kind=kind, sh_degree=0, refine_start=0, refine_every=2, steps=20)
    trainer = Trainer(oc, frames, splats, np.zeros(3), 1.0, torch.device("cpu"), seed=0)
    losses = [float(trainer.step(step, step % 2)) for step in range(6)]
    assert all(math.isfinite(x) for x in losses) and len(trainer.splats["means"]) > 60


def test_a_binocular_partner_moves_sideways_only():
    from recon.render import rigid_inverse

    viewmat = torch.tensor(look_at(np.array([0.0, -3.0, 1.0]), np.zeros(3))).float()
    shifted = reg.shift_camera(viewmat, torch.zeros(3), 0.1, torch.Generator().manual_seed(0))
    before, after = rigid_inverse(viewmat), rigid_inverse(shifted)
    move = after[:3, 3] - before[:3, 3]
    assert torch.allclose(after[:3, :3], before[:3, :3])
    assert float(move.norm()) <= 0.1 * math.sqrt(10) + 1e-6
    assert float(torch.cross(move, before[:3, 0], dim=0).norm()) < 1e-5  # along the camera's x axis


def test_co_regularisation_is_zero_for_identical_sets_and_positive_when_they_differ():
    """The co_reg term alone: a set beside an identical partner adds nothing to its loss, beside another it does."""
    from dataclasses import replace

    from recon.optim.trainer import Trainer
    from recon.scene.frames import Frames

    rng = np.random.default_rng(0)
    splats = init_splats(rng.normal(scale=0.5, size=(60, 3)), rng.random((60, 3)), sh_degree=0, init_opacity=0.5)
    eyes = [np.array([4.0 * np.cos(a), 4.0 * np.sin(a), 1.0]) for a in (0.0, 0.6)]
    viewmats = torch.tensor(np.stack([look_at(e, np.zeros(3)) for e in eyes]), dtype=torch.float32)
    Ks = torch.tensor(intrinsics_matrix(24, 24, 12, 9), dtype=torch.float32).expand(2, 3, 3)
    frames = Frames(["a", "b"], torch.rand(2, 18, 24, 3, generator=torch.Generator().manual_seed(0)), None,
                    viewmats, Ks, 24, 18)
    oc = replace(load_config("default").optimize, sh_degree=0, regularize_from=0, binocular=0.0, depth_weight=0.0,
                 anisotropy=0.0, opacity_reg=0.0, opacity_decay=0.0, refine_start=1000, co_reg=1.0,
                 dropout=0.0)
    cpu = torch.device("cpu")

    def first_loss(partner_splats: dict | None, co_reg: float) -> float:
        trainer = Trainer(replace(oc, co_reg=co_reg), frames, splats, np.zeros(3), 1.0, cpu, seed=0)
        if partner_splats is not None:
            trainer.partner = Trainer(oc, frames, partner_splats, np.zeros(3), 1.0, cpu, seed=1)
        return float(trainer.step(0, 0))

    alone = first_loss(None, 0.0)
    assert first_loss(splats, 1.0) == pytest.approx(alone, abs=1e-6)
    other = {**splats, "sh0": splats["sh0"] + 0.5}  # the same splats in other colours
    assert first_loss(other, 1.0) > alone + 0.01


def test_adam_matches_torchs_fused_adam_through_gsplats_densification():
    from gsplat.strategy.ops import duplicate, remove

    from recon.optim.adam import Adam

    torch.manual_seed(0)
    start = {"means": torch.randn(40, 3), "opacities": torch.randn(40)}
    ours = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in start.items()})
    theirs = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in start.items()})
    ours_opt = {k: Adam([{"params": p, "lr": 0.01, "name": k}], eps=1e-15) for k, p in ours.items()}
    theirs_opt = {k: torch.optim.Adam([{"params": p, "lr": 0.01, "name": k}], eps=1e-15, fused=True)
                  for k, p in theirs.items()}
    for step in range(30):
        if step == 10:  # the moments follow the splats: copied, then dropped
            for params, opts in ((ours, ours_opt), (theirs, theirs_opt)):
                duplicate(params, opts, {}, torch.arange(40) % 3 == 0)
        if step == 20:
            for params, opts in ((ours, ours_opt), (theirs, theirs_opt)):
                remove(params, opts, {}, torch.arange(54) % 4 == 1)
        grads = {k: torch.randn_like(v) for k, v in ours.items()}
        for params, opts in ((ours, ours_opt), (theirs, theirs_opt)):
            for k, p in params.items():
                p.grad = grads[k].clone()
            for opt in opts.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            opts["means"].param_groups[0]["lr"] *= 0.9
    for k in start:
        assert torch.equal(ours[k], theirs[k])
        assert torch.equal(ours_opt[k].state[ours[k]]["exp_avg_sq"], theirs_opt[k].state[theirs[k]]["exp_avg_sq"])


def test_training_leaves_torch_dynamo_unimported(synthetic_scene, tmp_path):
    """torch.optim's first optimizer imports torch._dynamo, sympy and FSDP (seconds of a run's start); recon's own
    Adam does not."""
    script = ("import sys; from pathlib import Path; from recon.config import load_config; "
              "from recon.pipeline import run_scene; "
              f"run_scene(Path({str(synthetic_scene)!r}), load_config('tiny', {{'views.count': 3}}), "
              f"Path({str(tmp_path)!r}), until='optimize'); "
              "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_stereo_that_covers_too_little_is_set_aside_points_and_depths(synthetic_scene, tmp_path):
    cfg = tiny(**{"data.masks": False, "init.mvs_min_coverage": 0.99})
    with pytest.warns(UserWarning, match=r"multi-view stereo kept a depth for [\d.]+% of the training views' pixels "
                                         r"with texture, under init.mvs_min_coverage \(99.0%\).*neither its points "
                                         r"nor its depths are used; trying the next source"):
        graph = run_scene(synthetic_scene, cfg, tmp_path, until="init").graph
    init = graph.nodes["metrics/init"].values
    assert init["source"] == "random" and 0 < init["mvs"]["coverage"] < 0.99
    assert init["mvs"]["coverage_within"] == "images"
    assert "depth/mvs" not in graph.nodes and "points/mvs" not in graph.nodes  # nothing of it reaches optimize
    off = run_scene(synthetic_scene, tiny(**{"data.masks": False}), tmp_path / "off", until="init").graph
    assert off.nodes["metrics/init"].values["source"] == "mvs"
