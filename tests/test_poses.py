"""Pose stage and pose metrics: SfM on rendered scenes recovers their cameras or refuses what cannot be recovered;
refinement undoes a perturbation."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import build_colmap, build_transforms, transpose_rotations
from PIL import Image
from scipy import ndimage

from recon.cli import main
from recon.config import load_config
from recon.errors import InputError
from recon.io import images as image_io
from recon.io.exif import read_camera
from recon.metrics import poses as pose_eval
from recon.optim.pose_refine import PoseCorrection, align_to_image
from recon.pipeline import run_scene
from recon.render import render
from recon.render.splats import init_splats
from recon.scene.camera import camera_center, intrinsics_matrix, look_at, transform_world_to_camera
from recon.sfm.matching import camera_priors


@pytest.fixture(scope="module")
def textured_scene(tmp_path_factory):
    """12 DTU-like views of the knot at 320x240: enough texture and overlap for SIFT."""
    from recon.data.synth import SynthSpec, synthesize

    out = tmp_path_factory.mktemp("poses") / "knot"
    synthesize(out, SynthSpec("knot", layout="dtu", views=12, width=320, height=240, aux=False, gt_spacing=0.05))
    return out


def texture(seed: int, size: int = 256) -> np.ndarray:
    """[size, size, 3] in [0, 1]: smoothed noise at five scales, blobs that SIFT finds at any scale."""
    rng = np.random.default_rng(seed)
    out = sum(np.sqrt(s) * ndimage.gaussian_filter(rng.normal(size=(size, size, 3)), (s, s, 0), mode="wrap")
              for s in (1, 2, 4, 8, 16))
    return (out - out.min()) / (out.max() - out.min())


# Textured rectangles: (corner [3], edge u [3], edge v [3], texture); the texture spans each rectangle once.
CORNER = [(np.zeros(3), 2 * np.eye(3)[a], 2 * np.eye(3)[b], texture(k))
          for k, (a, b) in enumerate([(0, 1), (1, 2), (2, 0)])]
FACADE = [(np.array([-2.0, -1.5, 0.0]), np.array([4.0, 0, 0]), np.array([0, 3.0, 0]), texture(3))]


def render_planes(planes, K: np.ndarray, w2c: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [H, W, 3]: the nearest textured rectangle along each pixel's ray (black where none)."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1).reshape(-1, 3)
    d, c = rays @ w2c[:3, :3], camera_center(w2c)
    depth, image = np.full(len(d), np.inf), np.zeros((len(d), 3))
    for corner, eu, ev, tex in planes:
        normal = np.cross(eu, ev)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((corner - c) @ normal) / (d @ normal)
        p = c + t[:, None] * d - corner
        a, b = p @ eu / (eu @ eu), p @ ev / (ev @ ev)
        hit = (t > 0) & (t < depth) & (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
        size = tex.shape[0]
        coords = [b[hit] * (size - 1), a[hit] * (size - 1)]
        image[hit] = np.stack([ndimage.map_coordinates(tex[..., k], coords, order=1) for k in range(3)], axis=-1)
        depth[hit] = t[hit]
    return np.round(image.reshape(height, width, 3) * 255).astype(np.uint8)


def write_photo(path, pixels: np.ndarray, focal_35mm: int | None = None) -> None:
    """PNG, or JPEG with EXIF (make, model, 35 mm-equivalent focal length) when ``focal_35mm`` is given."""
    if focal_35mm is None:
        Image.fromarray(pixels).save(path)
        return
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "recon", "test camera"
    exif.get_ifd(0x8769)[0xA405] = focal_35mm
    Image.fromarray(pixels).save(path, exif=exif, quality=95)


def orbit(target: np.ndarray, azimuths, elevation: float = 35.0, distance: float = 3.2) -> list[np.ndarray]:
    """World-to-camera matrices looking at ``target`` from the given azimuths (degrees), z up."""
    out = []
    for az in np.radians(azimuths):
        direction = np.array([np.cos(az) * np.cos(np.radians(elevation)), np.sin(az) * np.cos(np.radians(elevation)),
                              np.sin(np.radians(elevation))])
        out.append(look_at(target + distance * direction, target, np.array([0.0, 0.0, 1.0])))
    return out


def photo_folder(root, planes, cameras: list[tuple[np.ndarray, np.ndarray, int, int]], focal_35mm=None):
    """A folder of photos (no cameras) of ``planes`` from (K, world_to_camera, width, height) each."""
    root.mkdir(parents=True)
    for i, (K, w2c, width, height) in enumerate(cameras):
        exif = None if focal_35mm is None else focal_35mm[i]
        write_photo(root / f"photo_{i}.{'png' if exif is None else 'jpg'}",
                    render_planes(planes, K, w2c, width, height), exif)
    return root


def estimated(graph) -> list[np.ndarray]:
    return [graph.camera_of(v).world_to_camera for v in sorted(graph.views("train"), key=lambda v: v.name)]


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
    cfg = load_config("tiny", {"poses.mode": "estimate", "views.count": 10})
    graph = run_scene(textured_scene, cfg, tmp_path, until="optimize").graph
    values = graph.nodes["metrics/poses"].values
    assert values["source"] == "estimated" and values["registered"] == 10 and values["sfm_points"] > 100
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
    # The held-out views keep their given poses, in the estimated frame, with the estimated camera's intrinsics.
    held_out = graph.views("test")
    assert len(held_out) == 2 and all(graph.camera_of(v).id.startswith("estimated/") for v in held_out)
    K = graph.camera_of(graph.views("train")[0]).K
    for v in held_out:
        np.testing.assert_array_equal(graph.camera_of(v).K, K)
        c_est = camera_center(graph.camera_of(v).world_to_camera)
        c_given = camera_center(graph.nodes[given[v.id]].world_to_camera)
        S_est = graph.to_dataset @ np.r_[c_est, 1.0]
        S_given = np.asarray(graph.meta["poses_given"]["to_dataset"]) @ np.r_[c_given, 1.0]
        assert np.linalg.norm(S_est - S_given) < 1e-6 * np.linalg.norm(S_given[:3])
    # Estimated training cameras are refined with the splats (optimize.pose_refine: auto).
    refined = graph.nodes["metrics/optimize"].values["poses"]
    assert refined["refined"] and all(graph.trained_camera(v).id == f"refined/{v.name}" for v in graph.views("train"))
    assert all(graph.trained_camera(v) is graph.camera_of(v) for v in held_out)  # the mesh and prior stages' cameras
    # Back to the given poses: the stage reruns and the views use the imported cameras again.
    again = run_scene(textured_scene, load_config("tiny", {"views.count": 10, "poses.check_given": True}), tmp_path,
                      until="poses").graph
    kept = again.nodes["metrics/poses"].values
    assert kept["source"] == "given" and kept["given_fit"]["judged"] and not kept["given_fit"]["unfit"]
    assert not any(graph.camera_of(v).id.startswith("estimated/") for v in again.views())


def test_given_cameras_that_do_not_fit_the_photos_are_named_in_one_warning(textured_scene, tmp_path):
    """A COLMAP model stored with every rotation transposed (its quaternions conjugated), then one with a single
    camera moved: the feature matches lie off the epipolar lines the cameras predict, and one warning names the
    views; the right model fits; the switch turns the check off."""
    root = build_colmap(textured_scene, tmp_path / "colmap")
    cfg = load_config("tiny", {"views.count": 10, "poses.check_given": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right cameras: no warning at all
        graph = run_scene(root, cfg, tmp_path / "right", until="poses").graph
    right = graph.nodes["metrics/poses"].values
    assert right["given_fit"]["judged"] and right["given_fit"]["share"] > 0.9 and not right["given_fit"]["unfit"]
    moved = graph.views("train")[3]
    images = root / "sparse" / "0" / "images.txt"
    text = images.read_text()
    transpose_rotations(root)
    with pytest.warns(UserWarning, match="the given cameras of .* training views do not fit the photos") as said:
        wrong = run_scene(root, cfg, tmp_path / "wrong", until="poses").graph.nodes["metrics/poses"].values
    assert len([w for w in said if "do not fit" in str(w.message)]) == 1 and len(wrong["given_fit"]["unfit"]) >= 5
    lines = text.splitlines()  # the right model again, one training camera moved sideways by a fifth of its distance
    k = next(k for k, line in enumerate(lines) if line and line.split()[9] == Path(moved.image).name)
    f = lines[k].split()
    f[5] = str(float(f[5]) + 0.2 * float(f[7]))
    lines[k] = " ".join(f)
    images.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="the given cameras of 1 of 10 training views do not fit"):
        one = run_scene(root, cfg, tmp_path / "one", until="poses").graph.nodes["metrics/poses"].values
    assert one["given_fit"]["unfit"] == [moved.name]
    off = run_scene(root, load_config("tiny", {"views.count": 10}), tmp_path / "off",
                    until="poses").graph.nodes["metrics/poses"].values
    assert off == {"source": "given"}


@pytest.mark.parametrize("mistake", ["OpenCV axes written as OpenGL's", "world-to-camera written as camera-to-world"])
def test_given_cameras_in_another_convention_are_named(textured_scene, tmp_path, mistake):
    """transforms.json whose matrices are in another convention than nerfstudio's: the check warns."""
    root = build_transforms(textured_scene, tmp_path / "transforms")
    meta = json.loads((root / "transforms.json").read_text())
    for frame in meta["frames"]:
        M = np.array(frame["transform_matrix"])
        frame["transform_matrix"] = (M @ np.diag([1, -1, -1, 1]) if mistake.startswith("OpenCV")
                                     else np.linalg.inv(M)).tolist()
    (root / "transforms.json").write_text(json.dumps(meta))
    cfg = load_config("tiny", {"views.count": 10, "poses.check_given": True})
    with pytest.warns(UserWarning, match="training views do not fit the photos"):
        fit = run_scene(root, cfg, tmp_path / "out", until="poses").graph.nodes["metrics/poses"].values["given_fit"]
    assert fit["share"] < 0.05 and len(fit["unfit"]) >= 5


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
    # COLMAP's multi-threaded mapping is not deterministic with these features: assert only that they run and place
    # views.
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
        run_scene(photos, load_config("tiny", {}), tmp_path / "out", until="init")
    saved = json.loads((tmp_path / "out" / "photos" / "scene.json").read_text())
    assert [s["name"] for s in saved["stages"]] == ["views"]  # the finished stages only; a rerun resumes there
    with pytest.warns(UserWarning, match="IMG_99"):
        graph = run_scene(photos, load_config("tiny", {"poses.allow_partial": True}), tmp_path / "out",
                          until="init").graph
    assert [v.name for v in graph.views("train")] == [f"IMG_{i:02d}" for i in range(12)]
    assert graph.views("unused")[0].name == "IMG_99"
    assert graph.nodes["metrics/init"].values["source"] == "random" or graph.nodes["points/sfm"].count > 50
    with pytest.raises(InputError, match="--poses given, but 13 views have no camera"):
        run_scene(photos, load_config("default", {"poses.mode": "given"}), tmp_path / "other")


def test_three_photos_far_apart_of_a_textured_corner_are_placed(tmp_path):
    K = intrinsics_matrix(300, 300, 160, 120)
    truth = orbit(np.array([0.6, 0.6, 0.5]), [15, 45, 75])  # 30 degrees apart
    photos = photo_folder(tmp_path / "corner", CORNER, [(K, w2c, 320, 240) for w2c in truth])
    graph = run_scene(photos, load_config("default", {}), tmp_path / "out", until="poses").graph
    values = graph.nodes["metrics/poses"].values
    assert values["registered"] == 3 and values["mapper"] == "fewview"
    errors, _ = pose_eval.compare(estimated(graph), truth)
    assert errors["rotation_error_deg"]["max"] < 1.0 and errors["translation_error_relative"] < 0.02
    assert values["cameras"][0]["focal_px"] == pytest.approx(300, rel=0.03)


def test_one_plane_is_refused_without_a_focal_length_and_placed_with_exif(tmp_path):
    K = intrinsics_matrix(300, 300, 160, 120)
    truth = [look_at(np.array([x, -0.3, 3.0]), np.zeros(3), np.array([0.0, -1.0, 0.0])) for x in (-1.2, 0.0, 1.2)]
    cameras = [(K, w2c, 320, 240) for w2c in truth]
    with pytest.raises(InputError, match="no poses: every pair of registered views is related by a homography"):
        run_scene(photo_folder(tmp_path / "plain", FACADE, cameras), load_config("default", {}), tmp_path / "out")
    # 32 mm equivalent on a 400-pixel diagonal: 295.8 px, 1.4% short of the truth
    photos = photo_folder(tmp_path / "exif", FACADE, cameras, focal_35mm=[32, 32, 32])
    graph = run_scene(photos, load_config("default", {}), tmp_path / "out", until="poses").graph
    values = graph.nodes["metrics/poses"].values
    assert values["registered"] == 3 and values["cameras"][0]["focal_prior_from_exif"]
    errors, _ = pose_eval.compare(estimated(graph), truth)
    assert errors["rotation_error_deg"]["max"] < 1.0


def test_a_camera_that_only_turned_is_not_placed(tmp_path):
    K = intrinsics_matrix(300, 300, 160, 120)
    eye = np.array([2.5, 2.5, 2.0])
    cameras = [(K, look_at(eye, np.array([0.6, 0.6, 0.5]) + shift, np.array([0.0, 0.0, 1.0])), 320, 240)
               for shift in (np.zeros(3), np.array([0.5, -0.5, 0.0]), np.array([-0.5, 0.5, 0.0]))]
    photos = photo_folder(tmp_path / "turned", CORNER, cameras, focal_35mm=[32, 32, 32])
    with pytest.raises(InputError, match=r"3 of 3 views did not register: .*did the camera only turn\?"):
        run_scene(photos, load_config("default", {}), tmp_path / "out", until="poses")


def test_photos_that_match_nothing_are_named_with_what_would_help(tmp_path):
    folder = tmp_path / "noise"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):  # texture everywhere, a different one in each photo: features, no match
        noise = rng.integers(0, 256, (60, 80), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
        Image.fromarray(np.stack([noise] * 3, -1)).save(folder / f"{i}.png")
    with pytest.raises(InputError, match=r"3 of 3 views did not register: .*no verified matches.*"
                                         r"no two of them matched: photos taken closer together"):
        run_scene(folder, load_config("default", {}), tmp_path / "out", until="poses")


def test_exif_gives_the_focal_length_and_separates_cameras(tmp_path):
    pixels = np.zeros((240, 320, 3), dtype=np.uint8)
    for name, focal in (("a.jpg", 26), ("b.jpg", 26), ("c.jpg", 52)):
        write_photo(tmp_path / name, pixels, focal)
    write_photo(tmp_path / "d.png", pixels)
    assert read_camera(tmp_path / "a.jpg", 320, 240).focal_px == pytest.approx(26 * 400 / np.hypot(36, 24))
    assert read_camera(tmp_path / "d.png", 320, 240).focal_px is None
    cameras, of_photo = camera_priors([tmp_path / n for n in ("a.jpg", "b.jpg", "c.jpg", "d.png")])
    assert of_photo == [0, 0, 1, 2] and [c.from_exif for c in cameras] == [True, True, False]
    assert cameras[2].focal == pytest.approx(1.2 * 320)


def test_damaged_exif_gives_no_camera_facts_rather_than_an_error(tmp_path):
    """Bytes of a photo's EXIF block overwritten at random: read_camera returns facts or None, never raises."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "recon", "test camera"
    ifd = exif.get_ifd(0x8769)
    ifd[0xA405], ifd[0x920A], ifd[0xA20E], ifd[0xA210], ifd[0xA002] = 26, 4.5, 1000.0, 3, 64
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8)).save(path, exif=exif)
    data = path.read_bytes()
    start = data.index(b"Exif\x00\x00") + 6
    length = int.from_bytes(data[start - 8 : start - 6], "big") - 8  # the APP1 segment's length, less its header
    rng = np.random.default_rng(0)
    for _ in range(300):
        damaged = bytearray(data)
        for at in rng.integers(start, start + length, rng.integers(1, 7)):
            damaged[at] = rng.integers(256)
        path.write_bytes(bytes(damaged))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about the damage it skips
            facts = read_camera(path, 64, 48)
        assert facts.focal_px is None or facts.focal_px > 0


def test_features_come_from_the_photos_at_their_own_size(tmp_path):
    K = intrinsics_matrix(450, 450, 240, 180)
    truth = orbit(np.array([0.6, 0.6, 0.5]), [15, 45, 75])
    photos = photo_folder(tmp_path / "corner", CORNER, [(K, w2c, 480, 360) for w2c in truth])
    graph = run_scene(photos, load_config("default", {"data.downscale": 2}), tmp_path / "out", until="poses").graph
    values = graph.nodes["metrics/poses"].values
    assert values["cameras"][0]["size"] == [480, 360] and values["features"] == "SIFT from the image up-sampled 2x"
    trained = graph.camera_of(graph.views("train")[0])
    assert (trained.width, trained.height) == (240, 180) and trained.K[0, 0] == pytest.approx(225, rel=0.03)


def test_photos_of_different_sizes_reconstruct_end_to_end_on_the_cpu(tmp_path):
    truth = orbit(np.array([0.6, 0.6, 0.5]), [15, 35, 55, 75])
    small, square = intrinsics_matrix(300, 300, 160, 120), intrinsics_matrix(260, 260, 120, 120)
    cameras = [(small, truth[0], 320, 240), (square, truth[1], 240, 240), (small, truth[2], 320, 240),
               (square, truth[3], 240, 240)]
    # 35 mm equivalents: 300 px on a 400-pixel diagonal is 32 mm, 260 px on a 339-pixel diagonal is 33 mm
    photos = photo_folder(tmp_path / "mixed", CORNER, cameras, focal_35mm=[32, 33, 32, 33])
    cfg = load_config("default", {
        "device": "cpu", "optimize.cpu_steps": 10, "optimize.cpu_points": 300, "optimize.cpu_max_width": 40,
        "mesh.cpu_resolution": 32, "mesh.extra_views": 2, "mesh.cpu_max_width": 40})
    graph = run_scene(photos, cfg, tmp_path / "out").graph
    values = graph.nodes["metrics/poses"].values
    assert values["registered"] == 4 and sorted(c["size"] for c in values["cameras"]) == [[240, 240], [320, 240]]
    errors, _ = pose_eval.compare(estimated(graph), truth)
    assert errors["rotation_error_deg"]["max"] < 1.0
    sizes = {v.name: (graph.camera_of(v).width, graph.camera_of(v).height) for v in graph.views("train")}
    assert sizes == {"photo_0": (320, 240), "photo_1": (240, 240), "photo_2": (320, 240), "photo_3": (240, 240)}
    assert graph.nodes["metrics/optimize"].values["resolution"][0] > 0 and "mesh/final" in graph.nodes
    exported = tmp_path / "export" / "transforms.json"
    assert main(["export", str(tmp_path / "out" / "mixed"), "--format", "transforms", "--to", str(exported)]) == 0
    frames = json.loads(exported.read_text())["frames"]
    assert sorted((f["w"], f["h"]) for f in frames) == [(240, 240), (240, 240), (320, 240), (320, 240)]


def perturbation_recovered(backend: str, kind: str, device: str) -> tuple[float, float]:
    """Rotation error (degrees) of a perturbed camera before and after fitting its correction to a render."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, size=(3000, 3))
    splats = init_splats(points, rng.uniform(0, 1, size=(3000, 3)), 0, kind, 1.0, 0.9, device)
    K = torch.tensor(intrinsics_matrix(70, 70, 32, 24), dtype=torch.float32, device=device)[None].repeat(2, 1, 1)
    eyes = (np.array([0, -4.0, 1.5]), np.array([2.5, -3.0, 1.5]))
    truth = torch.tensor(np.stack([look_at(eye, np.zeros(3)) for eye in eyes]), dtype=torch.float32, device=device)
    with torch.no_grad():
        target = render(splats, truth, K, 64, 48, kind=kind, backend=backend).rgb
    wrong = PoseCorrection(2, 1.0, torch.device(device))
    with torch.no_grad():
        wrong.twist[0] = torch.tensor([0.05, 0.05, 0.05, 0.1, 0.1, 0.1])  # the first view is the fixed gauge
        wrong.twist[1] = torch.tensor([0.03, -0.02, 0.01, 0.05, 0.0, -0.04])
        start, _ = wrong.correct_all(truth, K)
    assert torch.equal(start[0], truth[0])

    def render_fn(viewmats, Ks):
        return render(splats, viewmats, Ks, 64, 48, kind=kind, backend=backend).rgb[0]

    after = align_to_image(render_fn, start[1], K[1], target[1], 1.0, 150, 3e-3)[None].repeat(2, 1, 1)

    def error(m: torch.Tensor) -> float:
        return pose_eval.rotation_angle(m[1, :3, :3].double().cpu().numpy() @ truth[1, :3, :3].double().cpu().numpy().T)

    return error(start), error(after)


def test_refinement_reduces_a_perturbed_pose_error_reference_renderer():
    before, after = perturbation_recovered("reference", "3dgs", "cpu")
    assert before > 1.5 and after < 0.3 * before


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["3dgs", "2dgs"])
def test_refinement_reduces_a_perturbed_pose_error_gsplat(kind):
    before, after = perturbation_recovered("gsplat", kind, "cuda")
    assert before > 1.5 and after < 0.3 * before


def test_matches_the_given_cameras_explain_become_sfm_points_on_the_surface(textured_scene, tmp_path, monkeypatch):
    """poses.given_points: a scene without SfM points gets the explained matches between its training photos,
    triangulated with the given cameras, within 1% of the object's size of its true surface, coloured, and init
    starts from them, adds them to the stereo points (init.mvs_sfm), or starts from them alone where stereo confirms
    too few of them (init.mvs_min_confirmed) or covers too little of the photos (init.mvs_min_coverage); fewer of them
    than init.sfm_min_points and init goes on to the next source; a scene with points of its own keeps them."""
    import trimesh
    from scipy.spatial import cKDTree

    from recon.io import ply

    cfg = load_config("tiny", {"views.count": 6, "poses.given_points": True, "init.source": "sfm"})
    graph = run_scene(textured_scene, cfg, tmp_path / "idr", until="init").graph
    node = graph.nodes["points/sfm"]
    assert node.provenance.stage == "poses" and node.count >= 50
    assert graph.nodes["metrics/poses"].values["given_fit"]["points"] == node.count
    assert graph.nodes["metrics/init"].values["source"] == "sfm"
    points, colors = ply.read_points(graph.resolve(node.path))[:2]
    in_dataset = points @ graph.to_dataset[:3, :3].T + graph.to_dataset[:3, 3]
    mesh = trimesh.load(textured_scene / "gt" / "mesh.ply")
    distance = cKDTree(mesh.sample(200_000, seed=0)).query(in_dataset)[0]
    size = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
    assert np.median(distance) < 0.005 * size and np.percentile(distance, 90) < 0.01 * size
    assert colors.std() > 0.02  # from the photos, not one grey
    floor = load_config("tiny", {"views.count": 6, "poses.given_points": True, "init.source": "sfm",
                                 "init.sfm_min_points": node.count + 1})
    with pytest.warns(UserWarning, match=rf"the scene has {node.count} SfM points, fewer than init.sfm_min_points "
                                         rf"\({node.count + 1}\): too few to place the splats; trying the next source"):
        few = run_scene(textured_scene, floor, tmp_path / "idr", until="init").graph  # reuses the poses stage's output
    assert few.nodes["metrics/init"].values["source"] == "random"
    assert few.nodes["metrics/init"].values["sfm_rejected"] == node.count
    merged_cfg = load_config("tiny", {"views.count": 6, "poses.given_points": True, "init.mvs_sfm": True})
    merged = run_scene(textured_scene, merged_cfg, tmp_path / "merged", until="init").graph
    values = merged.nodes["metrics/init"].values
    assert values["source"] == "mvs" and values["sfm_points"] == merged.nodes["points/sfm"].count
    assert values["points"] == merged.nodes["points/mvs"].count + values["sfm_points"]
    assert merged.nodes["points/init"].provenance.made_from == ["points/mvs", "points/sfm"]
    assert values["mvs"]["sfm_confirmed"] > 0.3 and 20 <= values["mvs"]["sfm_seen"] <= values["sfm_points"]
    assert (tmp_path / "merged" / textured_scene.name / "assets" / "mvs" / "depth.npz").is_file()
    monkeypatch.setattr("recon.stages.init.CONFIRM_TOLERANCE", 1e-9)  # no stereo depth agrees with any point now
    strict = load_config("tiny", {"views.count": 6, "poses.given_points": True, "init.mvs_min_confirmed": 0.5})
    with pytest.warns(UserWarning, match=r"stereo confirms 0.0% of the \d+ SfM points .* neither its points nor"):
        aside = run_scene(textured_scene, strict, tmp_path / "aside", until="init").graph
    assert aside.nodes["metrics/init"].values["source"] == "sfm"
    assert "depth/mvs" not in aside.nodes and "points/mvs" not in aside.nodes
    assert not (tmp_path / "aside" / textured_scene.name / "assets" / "mvs" / "depth.npz").exists()
    thin = load_config("tiny", {"views.count": 6, "poses.given_points": True, "init.mvs_min_coverage": 0.99})
    with pytest.warns(UserWarning, match=r"under init.mvs_min_coverage \(99.0%\).*trying the next source"):
        gated = run_scene(textured_scene, thin, tmp_path / "gated", until="init").graph  # the default's rule, at 99%
    assert gated.nodes["metrics/init"].values["source"] == "sfm" and "depth/mvs" not in gated.nodes
    root = build_colmap(textured_scene, tmp_path / "colmap", points=50)
    own = run_scene(root, load_config("tiny", {"views.count": 6, "poses.given_points": True}), tmp_path / "own",
                    until="poses").graph
    assert own.nodes["points/sfm"].provenance.stage == "import" and own.nodes["points/sfm"].count == 50


def test_explained_matches_become_one_point_per_track():
    """The given cameras' explained matches join into tracks where pairs share a keypoint: a point three photos see
    is one point, not three, at its true place; a track holding two keypoints of one photo, or behind a camera that
    sees it, is left out."""
    from recon.sfm.check import _track_points

    K = np.array([[200.0, 0, 64], [0, 200.0, 48], [0, 0, 1]])
    poses = []
    for x in (-0.3, 0.0, 0.3):  # three cameras side by side, looking down +z at the points
        pose = np.eye(4)
        pose[0, 3] = -x
        poses.append(pose)
    truth = np.array([[0.1, 0.05, 3.0], [-0.2, 0.1, 2.5], [0.0, -0.1, 4.0], [0.15, 0.0, 3.5]])
    keypoints = []
    for pose in poses:
        cam = truth @ pose[:3, :3].T + pose[:3, 3]
        uv = cam @ K.T
        keypoints.append(np.vstack([uv[:, :2] / uv[:, 2:], [[10.0, 10.0]]]))  # and one stray keypoint (index 4)
    same = np.array([[0, 0], [1, 1], [2, 2]])  # points 0-2, matched in every pair
    point_3 = np.array([[3, 3]])
    matches = {(0, 1): np.vstack([same, point_3]), (1, 2): np.vstack([same, point_3]),
               (0, 2): np.vstack([same, [[3, 4]]])}  # photo 0's point 3 wrongly matched with photo 2's stray
    cameras = [(K, pose) for pose in poses]
    tolerances = [2.0, 2.0, 2.0]
    points, pixels = _track_points(keypoints, cameras, matches, tolerances)
    # Point 3's track holds photo 2's point 3 and its stray: two keypoints of one photo, left out.
    assert len(points) == 3
    assert np.abs(points - truth[:3]).max() < 1e-6
    assert [k for k, _ in pixels] == [0] and np.allclose(pixels[0][1], keypoints[0][:3])
    # Tracks that start in other photos keep their points and first keypoints in the same order.
    later = {(1, 2): np.array([[3, 3]]), (0, 1): same[:1]}
    points, pixels = _track_points(keypoints, cameras, later, tolerances)
    assert [k for k, _ in pixels] == [0, 1] and np.abs(points - truth[[0, 3]]).max() < 1e-6
    assert np.allclose(np.concatenate([xy for _, xy in pixels]), [keypoints[0][0], keypoints[1][3]])
    behind = [(K, pose) for pose in poses[:2]] + [(K, np.diag([-1.0, 1.0, -1.0, 1.0]) @ poses[2])]  # faces away
    assert len(_track_points(keypoints, behind, {(0, 1): same[:1], (1, 2): same[:1]}, tolerances)[0]) == 0
    # The cameras are side by side, so epipolar lines are rows: photo 2's keypoint slid 30 pixels along its row still
    # fits each pair's epipolar geometry, but no single point explains the chained track.
    slid = [k.copy() for k in keypoints]
    slid[2][0, 0] += 30
    assert len(_track_points(slid, cameras, {(0, 1): same[:1], (1, 2): same[:1]}, tolerances)[0]) == 0
    # A photo without keypoints (a blank one) is in no track and stops nothing.
    blank = [keypoints[0], keypoints[1], np.zeros((0, 2))]
    assert len(_track_points(blank, cameras, {(0, 1): same}, tolerances)[0]) == 3


def test_settings_that_check_stereo_against_sfm_points_say_when_the_scene_has_none(synthetic_scene, tmp_path):
    """init.mvs_min_confirmed and init.mvs_sfm need SfM points; given cameras come without them, so with neither
    poses.given_points nor an estimate they do nothing, and init says so instead of keeping stereo silently."""
    from recon.config import InitConfig
    from recon.stages.init import CONFIRM_MIN_POINTS, unused_sfm_settings

    cfg = load_config("tiny", {"views.count": 4, "init.mvs_min_confirmed": 0.5, "init.mvs_sfm": True})
    with pytest.warns(UserWarning, match=r"init.mvs_min_confirmed and init.mvs_sfm need the scene's SfM points and "
                                         r"it has none .*poses.given_points=true.: they do not apply"):
        graph = run_scene(synthetic_scene, cfg, tmp_path, until="init").graph
    assert graph.nodes["metrics/init"].values["source"] == "mvs" and "points/sfm" not in graph.nodes
    assert unused_sfm_settings(InitConfig(), has_sfm=False, sfm_seen=0) is None  # both off: nothing to say
    few = unused_sfm_settings(InitConfig(mvs_min_confirmed=0.5), has_sfm=True, sfm_seen=CONFIRM_MIN_POINTS - 1)
    assert few is not None and f"see {CONFIRM_MIN_POINTS - 1} SfM points, fewer than the {CONFIRM_MIN_POINTS}" in few
    assert unused_sfm_settings(InitConfig(mvs_min_confirmed=0.5, mvs_sfm=True), True, CONFIRM_MIN_POINTS) is None
    found_none = unused_sfm_settings(InitConfig(mvs_sfm=True), has_sfm=False, sfm_seen=0, given_points=True)
    assert found_none is not None and "init.mvs_sfm needs the scene's SfM points" in found_none
    assert "poses.given_points found none" in found_none


def test_plain_from_sfm_points_falls_back_to_random_points_where_there_are_none(synthetic_scene, tmp_path):
    """The plain_sfm preset triangulates the given cameras' explained matches; photos too small to match leave none,
    and init says so and starts from random points."""
    cfg = load_config("plain_sfm", {"views.count": 4, "optimize.steps": 5})
    assert cfg.init.source == "sfm" and cfg.poses.given_points and cfg.optimize.depth_smooth == 0
    with pytest.warns(UserWarning, match="init.source=sfm does not apply .the scene has no SfM points.; using random"):
        graph = run_scene(synthetic_scene, cfg, tmp_path, until="init").graph
    assert graph.nodes["metrics/init"].values["source"] == "random" and "points/sfm" not in graph.nodes


def test_fewview_tries_other_focal_guesses_only_for_cameras_without_exif_while_photos_stay_out(monkeypatch):
    """Where the first focal length leaves photos out, the guesses of FOCAL_GUESSES are tried in turn for the cameras
    without EXIF (a camera with EXIF keeps its own) until one places every photo, which is taken with its guess; a
    guess that places more photos but not all is not, and none is tried for a left-out photo without matches."""
    from recon.sfm import reconstruct as rec
    from recon.sfm.fewview import FewViewOptions
    from recon.sfm.matching import CameraPrior, Correspondences, Pair
    from recon.sfm.model import Model

    tried = []

    class Placing:  # places every photo from a focal length of 0.6 to 0.9 long sides, one photo otherwise
        def __init__(self, corr, options):
            self.corr, self.reasons = corr, {}

        def run(self):
            guess = self.corr.cameras[0].focal / 100
            tried.append((guess, self.corr.cameras[-1].focal))
            placed = 3 if 0.6 <= guess <= 0.9 else (2 if guess == 1.0 else 1)
            return Model("fewview", {i: (np.eye(3), np.eye(4)) for i in range(placed)}, np.zeros((0, 3)),
                         np.zeros((0, 3)), 0.5)

    monkeypatch.setattr(rec, "FewViewReconstruction", Placing)
    cameras = [CameraPrior(100, 80, 120.0, False), CameraPrior(50, 40, 42.0, True)]
    matched = {(0, 1): Pair(np.zeros((20, 2), int), "CALIBRATED"), (1, 2): Pair(np.zeros((20, 2), int), "PLANAR")}
    corr = Correspondences([np.zeros((0, 2))] * 3, matched, cameras, [0, 0, 1], ["a", "b", "c"], Path("."), Path("."))
    model, _, guess = rec._fewview(corr, FewViewOptions())
    assert model.registered == 3 and guess == 0.8
    assert tried == [(1.2, 42.0), (0.8, 42.0)]  # stops at the first guess that places every photo; EXIF's kept
    tried.clear()
    monkeypatch.setattr(rec, "FOCAL_GUESSES", (1.0, 0.5))  # the one places 2 of 3, the other 1: neither is taken
    model, _, guess = rec._fewview(corr, FewViewOptions())
    assert model.registered == 1 and guess is None and [t[0] for t in tried] == [1.2, 1.0, 0.5]
    tried.clear()
    unmatched = Correspondences(corr.keypoints, {(0, 1): matched[(0, 1)]}, cameras, [0, 0, 1], corr.names, Path("."),
                                Path("."))  # photo 2, left out, has no verified match: no focal length places it
    model, _, guess = rec._fewview(unmatched, FewViewOptions())
    assert model.registered == 1 and guess is None and [t[0] for t in tried] == [1.2]
    tried.clear()
    exif_only = Correspondences(corr.keypoints, matched, [CameraPrior(100, 80, 120.0, True)], [0, 0, 0], corr.names,
                                Path("."), Path("."))
    model, _, guess = rec._fewview(exif_only, FewViewOptions())
    assert model.registered == 1 and guess is None and tried == [(1.2, 120.0)]


def test_matching_numbers_the_photos_in_their_order(synthetic_scene, tmp_path):
    """COLMAP numbers the photos as their features are written, and the numbering orients each pair's verification:
    one extraction thread writes them in order, so the same photos give the same matches from run to run."""
    import pycolmap

    from recon.sfm.matching import FeatureOptions, Photo, camera_priors, match

    paths = sorted((synthetic_scene / "image").iterdir())[:6]
    priors, of = camera_priors(paths)
    corr = match([Photo(p, None, c) for p, c in zip(paths, of)], priors, FeatureOptions(upsample=True), tmp_path)
    db = pycolmap.Database.open(str(corr.database))
    try:
        numbered = sorted((im.image_id, im.name) for im in db.read_all_images())
    finally:
        db.close()
    assert [name for _, name in numbered] == corr.names
