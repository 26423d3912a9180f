"""Pose stage and pose metrics: SfM on a rendered scene recovers its cameras; refinement undoes a perturbation."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from builders import build_colmap
from recon.config import load_config
from recon.errors import InputError
from recon.eval import poses as pose_eval
from recon.io import images as image_io
from recon.optim.pose_refine import PoseCorrection, align_to_image
from recon.pipeline import run_scene
from recon.render import render
from recon.render.splats import init_splats
from recon.scene.camera import camera_center, intrinsics_matrix, look_at, transform_world_to_camera


@pytest.fixture(scope="module")
def textured_scene(tmp_path_factory):
    """12 DTU-like views of the knot at 320x240: enough texture and overlap for SIFT."""
    from recon.data.synth import SynthSpec, synthesize

    out = tmp_path_factory.mktemp("poses") / "knot"
    synthesize(out, SynthSpec("knot", layout="dtu", views=12, width=320, height=240, aux=False, gt_spacing=0.05))
    return out


def random_similarity(rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    S = np.eye(4)
    S[:3, :3] = 2.5 * q
    S[:3, 3] = rng.normal(size=3)
    return S


def test_alignment_and_auc_are_exact_on_known_cases():
    rng = np.random.default_rng(0)
    cams = [look_at(rng.normal(size=3) * 3 + np.array([0, 0, 4]), np.zeros(3)) for _ in range(6)]
    S = random_similarity(rng)
    moved = [transform_world_to_camera(c, S) for c in cams]  # the same cameras in another frame
    values, alignment = pose_eval.compare(cams, moved)
    np.testing.assert_allclose(alignment, S, atol=1e-9)
    assert values["rotation_error_deg"]["max"] < 1e-5 and values["translation_error"]["max"] < 1e-9
    assert min(values["auc"].values()) > 1 - 1e-6 and abs(values["alignment_scale"] - 2.5) < 1e-9
    # Errors 0 and 10 degrees; the recall curve is piecewise linear through (0, 1/2), (10, 1) as in LoFTR's pose_auc:
    # up to 5 it stays 1/2 -> 0.5; up to 20: (10 * (0.5 + 1) / 2 + 10 * 1) / 20 = 0.875.
    auc = pose_eval.pose_auc(np.array([0.0, 10.0]))
    assert auc["5"] == pytest.approx(0.5) and auc["20"] == pytest.approx(0.875)


def test_estimated_poses_align_to_the_given_ones(textured_scene, tmp_path):
    cfg = load_config("default", {"poses.mode": "estimate", "views.count": 12})
    graph = run_scene(textured_scene, cfg, tmp_path, until="init").graph
    values = graph.nodes["metrics/poses"].values
    assert values["source"] == "estimated" and values["registered"] == 12 and values["sfm_points"] > 100
    errors = values["against_given"]
    assert errors["rotation_error_deg"]["max"] < 2.0
    assert errors["translation_error_relative"] < 0.02
    assert errors["auc"]["10"] > 0.8
    assert all(graph.camera_of(v).id.startswith("estimated/") for v in graph.views("train"))
    # The frame now maps the estimated world onto the dataset's: camera centres land where the given ones are.
    given = graph.meta["poses_given"]["cameras"]
    for v in graph.views("train")[:3]:
        c_est = camera_center(graph.camera_of(v).world_to_camera)
        c_given = camera_center(graph.nodes[given[v.id]].world_to_camera)
        S_est = graph.to_dataset @ np.r_[c_est, 1.0]
        S_given = np.asarray(graph.meta["poses_given"]["to_dataset"]) @ np.r_[c_given, 1.0]
        assert np.linalg.norm(S_est - S_given) < 0.05 * np.linalg.norm(S_given[:3])
    # Back to the given poses: the stage reruns and the views use the imported cameras again.
    again = run_scene(textured_scene, load_config("default", {"views.count": 12}), tmp_path, until="poses").graph
    assert again.nodes["metrics/poses"].values == {"source": "given"}
    assert not any(graph.camera_of(v).id.startswith("estimated/") for v in again.views())


def test_a_rerun_with_given_poses_gets_back_the_imported_points_and_the_views_roles(textured_scene, tmp_path):
    root = build_colmap(textured_scene, tmp_path / "colmap", points=50)
    estimated = run_scene(root, load_config("default", {"poses.mode": "estimate", "poses.allow_partial": True}),
                          tmp_path / "out", until="poses").graph
    assert estimated.nodes["points/sfm"].provenance.stage == "poses"
    # Views the estimate left out are "unused" for as long as it stands (here: all of them, on disk).
    scene_json = tmp_path / "out" / "colmap" / "scene.json"
    saved = json.loads(scene_json.read_text())
    for node in saved["nodes"]:
        if node["type"] == "View":
            node["role"] = "unused"
    scene_json.write_text(json.dumps(saved))
    again = run_scene(root, load_config("default", {}), tmp_path / "out", until="poses").graph
    node = again.nodes["points/sfm"]
    assert node.provenance.stage == "import" and node.count == 50 and "points/sfm_given" not in again.nodes
    chosen = again.nodes["metrics/views"].values
    assert sorted(v.name for v in again.views("train")) == sorted(chosen["train"]) and not again.views("unused")


def test_wide_baseline_features_and_guided_matching_run_and_place_views(textured_scene, tmp_path):
    # COLMAP's multi-threaded mapping is not deterministic with these features: assert only that they run and place views.
    cfg = load_config("default", {"poses.mode": "estimate", "views.count": 12, "poses.wide_baseline": True,
                                  "poses.guided_matching": True, "poses.allow_partial": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = run_scene(textured_scene, cfg, tmp_path, until="poses").graph.nodes["metrics/poses"].values
    assert values["source"] == "estimated" and values["registered"] >= 3


def test_plain_photos_get_cameras_and_a_view_that_cannot_register_is_named(textured_scene, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(sorted((textured_scene / "image").glob("*.png"))):
        shutil.copy(image, photos / f"IMG_{i:02d}.png")
    image_io.write_image(photos / "IMG_99.png", np.full((240, 320, 3), 0.5))  # no texture at all
    with pytest.raises(InputError, match=r"1 of 13 views did not register: IMG_99 \(0 features.*--allow-partial"):
        run_scene(photos, load_config("default", {}), tmp_path / "out", until="init")
    saved = json.loads((tmp_path / "out" / "photos" / "scene.json").read_text())
    assert [s["name"] for s in saved["stages"]] == ["views"]  # the finished stages only; a rerun resumes there
    with pytest.warns(UserWarning, match="IMG_99"):
        graph = run_scene(photos, load_config("default", {"poses.allow_partial": True}), tmp_path / "out", until="init").graph
    assert [v.name for v in graph.views("train")] == [f"IMG_{i:02d}" for i in range(12)]
    assert graph.views("unused")[0].name == "IMG_99"
    assert graph.nodes["metrics/init"].values["source"] == "random" or graph.nodes["points/sfm"].count > 50
    with pytest.raises(InputError, match="--poses given, but 13 views have no camera"):
        run_scene(photos, load_config("default", {"poses.mode": "given"}), tmp_path / "other")


def perturbation_recovered(backend: str, kind: str, device: str) -> tuple[float, float]:
    """Rotation error (degrees) of a perturbed camera before and after fitting its correction to a render."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, size=(3000, 3))
    splats = init_splats(points, rng.uniform(0, 1, size=(3000, 3)), 0, kind, 1.0, 0.9, device)
    K = torch.tensor(intrinsics_matrix(70, 70, 32, 24), dtype=torch.float32, device=device)[None].repeat(2, 1, 1)
    truth = torch.tensor(np.stack([look_at(np.array([0, -4.0, 1.5]), np.zeros(3)),
                                   look_at(np.array([2.5, -3.0, 1.5]), np.zeros(3))]), dtype=torch.float32, device=device)
    with torch.no_grad():
        target = render(splats, truth, K, 64, 48, kind=kind, backend=backend).rgb
    wrong = PoseCorrection(2, 1.0, torch.device(device))
    with torch.no_grad():
        wrong.twist[0] = torch.tensor([0.05, 0.05, 0.05, 0.1, 0.1, 0.1])  # the first view is the fixed gauge
        wrong.twist[1] = torch.tensor([0.03, -0.02, 0.01, 0.05, 0.0, -0.04])
        start, _ = wrong.apply(truth, K)
    assert torch.equal(start[0], truth[0])

    def render_fn(viewmats, Ks):
        return render(splats, viewmats, Ks, 64, 48, kind=kind, backend=backend).rgb[0]

    after = align_to_image(render_fn, start[1], K[1], target[1], 1.0, 150, 3e-3)[None].repeat(2, 1, 1)
    error = lambda m: pose_eval.rotation_angle(m[1, :3, :3].double().cpu().numpy() @ truth[1, :3, :3].double().cpu().numpy().T)  # noqa: E731
    return error(start), error(after)


def test_refinement_reduces_a_perturbed_pose_error_reference_renderer():
    before, after = perturbation_recovered("reference", "3dgs", "cpu")
    assert before > 1.5 and after < 0.3 * before


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["3dgs", "2dgs"])
def test_refinement_reduces_a_perturbed_pose_error_gsplat(kind):
    before, after = perturbation_recovered("gsplat", kind, "cuda")
    assert before > 1.5 and after < 0.3 * before
