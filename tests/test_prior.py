"""Prior stage: pseudo cameras, the repair model, the stage's outputs and cache, a pretrained pipeline, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from builders import tiny_img2img_pipeline

from recon.config import load_config
from recon.errors import InputError
from recon.pipeline import run_scene
from recon.priors.repair import RepairSettings, SceneRepair
from recon.priors.views import angle_to_path, path_cameras
from recon.scene.camera import camera_center, look_at
from recon.stages.prior import check_view

TINY = {
    "views.count": 4, "optimize.steps": 30, "optimize.cpu_steps": 30,
    "prior.enabled": True, "prior.loo_views": 2, "prior.loo_steps": 12, "prior.loo_snapshots": 2,
    "prior.perturb_samples": 2, "prior.channels": [8, 16], "prior.crop": 32, "prior.batch": 4, "prior.train_steps": 8,
    "prior.sample_steps": 2, "prior.pseudo_views": 4, "prior.distill_steps": 10, "prior.distill_rounds": 2,
    "prior.validate_margin": -100.0,  # the check runs, and passes: a few steps decide nothing
}


def tiny(**extra):
    return load_config("tiny", {**TINY, **extra})


def ring(azimuths_deg, radius=4.0, height=1.0):
    return np.stack([look_at(np.array([radius * np.cos(a), radius * np.sin(a), height]), np.zeros(3))
                     for a in np.radians(azimuths_deg)])


def _azimuth(T):
    c = camera_center(T)
    return np.degrees(np.arctan2(c[1], c[0])) % 360


def test_pseudo_cameras_lie_between_the_training_cameras_all_around():
    train = ring([0, 120, 240])
    cams, distance = path_cameras(train, np.zeros(3), 9, elevation_deg=0)
    assert cams.shape == (9, 4, 4) and distance.shape == (9,)
    for T in cams:
        R = T[:3, :3]
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(R), 1.0)
        assert np.isclose(np.linalg.norm(camera_center(T)), np.linalg.norm(camera_center(train[0])), atol=1e-6)
    # three per 120-degree arc, near 30, 60 and 90 degrees from its first camera (equal steps along the arc)
    expected = [30, 60, 90, 150, 180, 210, 270, 300, 330]
    assert np.allclose(sorted(_azimuth(T) for T in cams), expected, atol=1.5)
    assert 0 < distance.min() and distance.max() <= np.radians(60) + 1e-6
    # the pseudo cameras look at the centre like the training cameras do
    for T in cams:
        forward = T[2, :3]
        assert np.dot(forward, -camera_center(T)) / np.linalg.norm(camera_center(T)) > 0.99


def test_cameras_on_one_side_get_no_pseudo_views_behind_the_scene():
    cams, _ = path_cameras(ring([-30, 0, 30]), np.zeros(3), 6, elevation_deg=10)
    azimuths = [(_azimuth(T) + 180) % 360 - 180 for T in cams]
    assert all(-30 < a < 30 for a in azimuths), azimuths
    heights = [camera_center(T)[2] for T in cams]
    assert max(heights) > 1.05 and min(heights) < 0.95  # raised and lowered in turn


def test_the_check_holds_out_the_view_that_the_others_path_passes_nearest():
    from recon.scene.frames import Frames

    train = ring([0, 40, 90, 200])
    # without view 1 the path from 0 to 90 runs through it; without 3 the path 200 -> 0 misses it by ~40 degrees
    assert angle_to_path(np.delete(train, 1, 0), train[1], np.zeros(3)) < np.radians(2)
    assert angle_to_path(np.delete(train, 3, 0), train[3], np.zeros(3)) > np.radians(30)
    frames = lambda T: Frames([str(i) for i in range(len(T))], None, None, torch.tensor(T, dtype=torch.float32),  # noqa: E731
                              torch.eye(3).expand(len(T), 3, 3), 8, 8)
    assert check_view(frames(ring([0, 60, 20])), np.zeros(3)) == 2
    assert check_view(frames(ring([0, 60])), np.zeros(3)) is None  # two views: nothing to hold out


def test_repair_model_learns_a_scene_degradation():
    """Renders darkened and shifted in colour: after training, the repair is closer to the photo than the render."""
    gen = torch.Generator().manual_seed(0)
    clean = torch.zeros(6, 32, 32, 3)
    clean[:, 8:24, 8:24] = torch.rand(6, 1, 1, 3, generator=gen) * 0.6 + 0.3
    degraded = clean * torch.tensor([0.5, 0.7, 0.9])
    settings = RepairSettings(channels=[16, 32], layers_per_block=1, crop=32, batch=8, steps=150, lr=2e-3,
                              timesteps=100, sample_steps=4, strength=0.6)
    model = SceneRepair(settings, torch.device("cpu"), seed=0)
    losses = model.fit(degraded, clean)
    assert losses[-1] < losses[0] * 0.5
    repaired = model.repair(degraded)
    assert repaired.shape == degraded.shape
    assert (repaired - clean).abs().mean() < 0.75 * (degraded - clean).abs().mean()
    again = SceneRepair(settings, torch.device("cpu"), seed=0)
    again.unet.load_state_dict(model.unet.state_dict())
    assert torch.allclose(again.repair(degraded), repaired, atol=1e-4)  # seeded sampling


def test_prior_stage_writes_its_splats_metrics_and_provenance(synthetic_scene, tmp_path):
    result = run_scene(synthetic_scene, tiny(), tmp_path)
    assert [o.name for o in result.outcomes] == ["import", "views", "poses", "init", "optimize", "prior", "mesh"]
    graph, out = result.graph, result.out_dir
    node = graph.nodes["gaussians/prior"]
    assert (out / node.path).is_file() and graph.splats() is node
    assert graph.nodes["mesh/final"].provenance.made_from == ["gaussians/prior"]
    m = graph.nodes["metrics/prior"].values
    assert m["prior"] == "scene" and m["model"]["pipeline"] == "UNet2DModel + DDIMScheduler"
    assert m["applied"] is True and m["outcome"].startswith("applied (check on ")
    check = m["validation"]
    assert check["passed"] and check["after"] != check["before"]
    assert check["gain"] == pytest.approx(check["after"] - check["before"])
    # views 0 and 3 are held out in turn (loo_views 2), and the check's view when it is another: 2 snapshots each
    train = [v.name for v in graph.views("train")]
    held = {0, 3, train.index(check["view"])}
    assert m["pairs"] == {"leave_one_out": 2 * len(held), "perturbed": 8, "cached": False}  # perturbed: 2 x 4 views
    assert m["pseudo_views"]["count"] == 4 and 0 < m["pseudo_views"]["weight_mean"] <= 0.5
    assert set(m["seconds"]) == {"pairs", "model", "validate", "distill", "evaluate"}
    assert m["gain"]["psnr_masked"] == pytest.approx(m["psnr_masked"] - m["before"]["psnr_masked"])
    assert len(m["per_view"]) == 8 and len(list((out / "assets/prior/renders").glob("*.png"))) == 8
    assert len(list((out / "assets/prior/pseudo").glob("*.png"))) == 4
    losses = json.loads((out / "assets/prior/loss.json").read_text())
    assert len(losses["repair"]["loss"]) == 2 and len(losses["distill"]["pseudo"]) == 2  # 4 + 4 model steps
    saved = json.loads((out / "metrics.json").read_text())["stages"]
    assert saved["prior"]["prior"] == "scene"

    # Other distillation settings: the stage reruns, the pairs come from the cache.
    again = run_scene(synthetic_scene, tiny(**{"prior.distill_weight": 0.35}), tmp_path).graph
    assert again.nodes["metrics/prior"].values["pairs"]["cached"] is True
    # A check that cannot pass: the prior is not applied, and nothing of the applied run is left behind.
    kept = run_scene(synthetic_scene, tiny(**{"prior.validate_margin": 100.0}), tmp_path)
    m = kept.graph.nodes["metrics/prior"].values
    assert m["applied"] is False and m["outcome"].startswith("not applied") and not m["validation"]["passed"]
    assert m["pairs"]["cached"] is True and set(m["seconds"]) == {"pairs", "model", "validate"}
    assert set(m["gain"].values()) == {0.0} and "psnr_masked" not in m
    assert kept.graph.splats().id == "gaussians/final" and "gaussians/prior" not in kept.graph.nodes
    assert kept.graph.nodes["mesh/final"].provenance.made_from == ["gaussians/final"]
    assert not any((out / "assets/prior" / name).exists() for name in ("splats.ply", "renders", "pseudo"))
    assert len(json.loads((out / "assets/prior/loss.json").read_text())["repair"]["loss"]) == 1  # the check's half
    # Off: recorded as off, the optimize stage's splats are the scene's, and off-stage settings change nothing.
    off = run_scene(synthetic_scene, tiny(**{"prior.enabled": False}), tmp_path)
    assert off.outcomes[5].status == "off" and off.graph.splats().id == "gaussians/final"
    assert "metrics/prior" not in off.graph.nodes
    off2 = run_scene(synthetic_scene, tiny(**{"prior.enabled": False, "prior.train_steps": 3}), tmp_path)
    assert [o.status for o in off2.outcomes[4:]] == ["reused", "off", "reused"]


def test_a_pretrained_image_to_image_pipeline_replaces_the_scene_model(synthetic_scene, tmp_path):
    folder = tiny_img2img_pipeline(tmp_path / "sd")
    cfg = tiny(**{"prior.checkpoint": str(folder), "prior.checkpoint_steps": 2})
    graph = run_scene(synthetic_scene, cfg, tmp_path / "out", until="prior").graph
    m = graph.nodes["metrics/prior"].values
    assert m["prior"] == f"checkpoint:{folder}" and m["model"]["pipeline"] == "StableDiffusionImg2ImgPipeline"
    assert m["pairs"] == {} and set(m["seconds"]) == {"load", "validate", "distill", "evaluate"}
    assert m["validation"]["passed"] and np.isfinite(m["psnr_masked"])


def test_bad_prior_settings_are_one_line_errors(synthetic_scene, tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    with pytest.raises(InputError, match=r"prior.checkpoint .*nowhere: no such folder"):
        run_scene(synthetic_scene, tiny(**{"prior.checkpoint": str(tmp_path / "nowhere")}), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"not a diffusers pipeline folder \(no model_index.json\)"):
        run_scene(synthetic_scene, tiny(**{"prior.checkpoint": str(tmp_path / "empty")}), tmp_path)
    unet = UNet2DModel(sample_size=8, block_out_channels=(8, 16), norm_num_groups=8, layers_per_block=1,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "unconditional")
    with pytest.raises(InputError, match=r"cannot load an image-to-image pipeline|not an image-to-image pipeline"):
        run_scene(synthetic_scene, tiny(**{"prior.checkpoint": str(tmp_path / "unconditional")}), tmp_path / "u")
    with pytest.raises(InputError, match=r"prior.channels \[12\]: .*multiple of 8"):
        run_scene(synthetic_scene, tiny(**{"prior.channels": [12]}), tmp_path)
    with pytest.raises(InputError, match=r"prior.validate needs leave-one-out runs"):
        run_scene(synthetic_scene, tiny(**{"prior.loo_steps": 0}), tmp_path)
    assert not (tmp_path / "mug").exists()  # rejected before anything was written


@pytest.mark.gpu
def test_prior_stage_on_gsplat(tmp_path):
    pytest.importorskip("diffusers")  # the stage's networks; a GPU machine may carry only what training needs
    from recon.resources import DATA_DIR

    cfg = load_config("default", {"views.count": 3, "device": "cuda", "optimize.steps": 600, "prior.enabled": True,
                                  "prior.loo_steps": 200, "prior.train_steps": 100, "prior.distill_steps": 200,
                                  "prior.validate_margin": -100.0})
    graph = run_scene(DATA_DIR / "example", cfg, tmp_path, until="prior").graph
    m = graph.nodes["metrics/prior"].values
    assert m["backend"] == "gsplat" and m["prior"] == "scene" and m["applied"]
    assert np.isfinite(m["validation"]["gain"])
    assert np.isfinite(m["psnr_masked"]) and m["psnr_masked"] > m["before"]["psnr_masked"] - 3.0
