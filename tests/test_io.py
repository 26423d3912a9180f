"""Importers: every layout, built in its own format, imports to the known cameras."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from builders import (
    build_colmap,
    build_images,
    build_rectified,
    build_spare,
    build_transforms,
    dataset_cameras,
    transpose_rotations,
    write_llff,
)

from recon.errors import InputError
from recon.io import ImportOptions, detect_layout, import_scene
from recon.io import images as image_io
from recon.scene.camera import camera_center, project, transform_world_to_camera
from recon.scene.graph import Mesh, PointCloud

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def assert_same_cameras(graph, truth, indices=None, atol=1e-6):
    """Each view's camera, taken to the dataset frame, projects like the true one."""
    indices = indices if indices is not None else range(len(truth))
    views = {v.index: v for v in graph.views()}
    rng = np.random.default_rng(0)
    for i in indices:
        K, w2c, w, h = truth[i]
        cam = graph.camera_of(views[i])
        assert (cam.width, cam.height) == (w, h)
        np.testing.assert_allclose(cam.K, K, atol=atol * max(1.0, K.max()))
        got = transform_world_to_camera(cam.world_to_camera, graph.to_dataset)
        pts = camera_center(w2c) + 500 * w2c[2, :3] + rng.normal(size=(10, 3)) * 50
        np.testing.assert_allclose(project(pts, cam.K, got)[0], project(pts, K, w2c)[0], atol=atol * 1e3)


def test_idr_synthetic_scene(synthetic_scene):
    graph = import_scene(synthetic_scene)
    assert graph.source["layout"] == "dtu-idr"
    assert len(graph.views()) == 12
    assert all(v.mask is not None for v in graph.views())
    assert isinstance(graph.nodes["mesh/ground_truth"], Mesh)
    assert isinstance(graph.nodes["points/ground_truth"], PointCloud)
    # The normalised frame puts the object inside the unit sphere and cameras ~5.8 away.
    centers = np.stack([camera_center(c.world_to_camera) for c in graph.cameras()])
    assert np.allclose(np.linalg.norm(centers, axis=1), graph.meta["synthetic"]["camera_distance"] / 100.0, rtol=1e-6)


@pytest.mark.parametrize("per_frame,angle", [(False, False), (True, False), (False, True)])
def test_transforms_json(synthetic_scene, tmp_path, per_frame, angle):
    root = build_transforms(synthetic_scene, tmp_path / "tf", per_frame=per_frame, angle=angle)
    graph = import_scene(root)
    assert graph.source["layout"] == "transforms"
    assert graph.meta["transforms"]["aabb_scale"] == 4
    assert_same_cameras(graph, dataset_cameras(synthetic_scene))
    assert len({c.sensor for c in graph.cameras()}) == 1


def test_transforms_missing_frames_warn_or_fail_when_strict(synthetic_scene, tmp_path):
    root = build_transforms(synthetic_scene, tmp_path / "tf")
    (root / "images" / "000003.png").unlink()
    with pytest.warns(UserWarning, match="000003.png"):
        graph = import_scene(root)
    assert len(graph.views()) == 11
    with pytest.raises(InputError, match="name images that do not exist: images/000003.png"):
        import_scene(root, ImportOptions(strict=True))


def test_transforms_distortion_is_undistorted_on_import(synthetic_scene, tmp_path):
    root = build_transforms(synthetic_scene, tmp_path / "tf")
    meta = json.loads((root / "transforms.json").read_text())
    meta.update(k1=-0.1, p1=0.001)
    (root / "transforms.json").write_text(json.dumps(meta))
    graph = import_scene(root)
    view = graph.views()[0]
    assert graph.camera_of(view).distortion is None
    assert view.pending_image is not None
    pixels = view.pending_image()
    original = image_io.read_image(root / "images" / "000000.png")
    assert pixels.shape == original.shape
    assert np.abs(pixels - original).mean() > 1e-3


def test_downscale_scales_intrinsics_and_images(synthetic_scene):
    graph = import_scene(synthetic_scene, ImportOptions(downscale=2))
    view = graph.views()[0]
    cam = graph.camera_of(view)
    assert (cam.width, cam.height) == (40, 30)
    assert cam.K[0, 0] == pytest.approx(1.8075 * 80 / 2)
    assert view.pending_image().shape == (30, 40, 3)
    assert view.pending_mask().shape == (30, 40)


def test_max_side_brings_large_photos_within_it_by_an_integer_factor(synthetic_scene):
    with pytest.warns(UserWarning, match=r"photos of 80x60 train at 26x20, down-sampled by 3 to bring the long side "
                                         r"within data.max_side \(30\); --set data.max_side=0 trains at full size"):
        graph = import_scene(synthetic_scene, ImportOptions(max_side=30))
    view = graph.views()[0]
    cam = graph.camera_of(view)
    assert (cam.width, cam.height) == (26, 20) and graph.meta["downscale"] == 3
    assert cam.K[0, 0] == pytest.approx(1.8075 * 80 / 3)
    assert view.pending_image().shape == (20, 26, 3) and view.pending_mask().shape == (20, 26)
    assert graph.meta["max_side"] == {"max_side": 30, "factor": 3, "downscale": 1}
    with pytest.warns(UserWarning, match="down-sampled by 3"):  # --downscale 2 leaves 40 > 30
        assert import_scene(synthetic_scene, ImportOptions(downscale=2, max_side=30)).meta["downscale"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for options in (ImportOptions(max_side=0), ImportOptions(max_side=80), ImportOptions(downscale=2, max_side=40)):
            graph = import_scene(synthetic_scene, options)
            assert "max_side" not in graph.meta
            assert graph.camera_of(graph.views()[0]).width == 80 // options.downscale


def test_max_side_down_samples_photos_of_every_size_by_one_factor(tmp_path):
    from PIL import Image

    (tmp_path / "photos").mkdir()
    for name, size in (("a", (64, 40)), ("b", (30, 20))):
        Image.new("RGB", size, (120, 80, 40)).save(tmp_path / "photos" / f"{name}.png")
    with pytest.warns(UserWarning, match="photos of 64x40 train at 21x13, down-sampled by 3"):
        graph = import_scene(tmp_path / "photos", ImportOptions(max_side=30))
    assert [view.pending_image().shape[:2] for view in graph.views()] == [(13, 21), (6, 10)]
    Image.new("RGB", (2, 2), (0, 0, 0)).save(tmp_path / "photos" / "c.png")
    with pytest.warns(UserWarning, match="down-sampled by 3"), pytest.raises(
            InputError, match=r"data.max_side 30: .*c.png is 2x2, which down-sampled by 3 has no pixels left"):
        import_scene(tmp_path / "photos", ImportOptions(max_side=30))


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_model(synthetic_scene, tmp_path, binary):
    root = build_colmap(synthetic_scene, tmp_path / "colmap", binary=binary)
    assert (root / "sparse" / "0" / ("cameras.bin" if binary else "cameras.txt")).is_file()
    graph = import_scene(root)
    assert graph.source["layout"] == "colmap"
    assert_same_cameras(graph, dataset_cameras(synthetic_scene))
    assert graph.nodes["points/sfm"].count == 50


def test_bench_corrects_a_colmap_model_stored_with_transposed_rotations(synthetic_scene, tmp_path):
    """bench/captures.py: castle_p30's copy stores each rotation transposed; its corrected copy has the true cameras."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from captures import corrected

    root = build_colmap(synthetic_scene, tmp_path / "castle_p30")
    transpose_rotations(root)
    stored = (root / "sparse" / "0" / "images.txt").read_text()
    with pytest.raises(AssertionError):
        assert_same_cameras(import_scene(root), dataset_cameras(synthetic_scene))
    fixed = corrected(root, tmp_path / "fixed")
    assert fixed == tmp_path / "fixed" / "castle_p30" and (root / "sparse" / "0" / "images.txt").read_text() == stored
    assert_same_cameras(import_scene(fixed), dataset_cameras(synthetic_scene), atol=1e-5)
    other = build_colmap(synthetic_scene, tmp_path / "other" / "scene")
    assert corrected(other, tmp_path / "fixed") == other


def test_bench_runs_keep_what_recon_warned(synthetic_scene, tmp_path):
    """bench/real.py: a run's warnings (a setting that did not apply, a fallback) are in its row and its table."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from real import markdown, run_one

    from recon.config import preset_settings

    overrides = {**preset_settings("tiny"), "views.count": 3, "optimize.cpu_steps": 2,
                 "init.mvs_min_confirmed": 0.5}
    row = run_one(str(synthetic_scene), "default", overrides, str(tmp_path), "mug-3v-conf", None)
    assert "error" not in row, row.get("error")
    assert any("init.mvs_min_confirmed needs the scene's SfM points" in w for w in row["warnings"])
    table = markdown({"variants": {"conf": {}}, "runs": [{**row, "scene": "mug", "views": 3, "variant": "conf"}]})
    assert "(1) |" in table and "- (1) mug, 3 views, conf: " in table and "init.mvs_min_confirmed" in table
    import warnings

    from real import MAX_WARNINGS, recon_warnings

    import recon

    ours = str(Path(recon.__file__).parent / "stages" / "init.py")
    caught = [warnings.WarningMessage(f"recon said {k}", UserWarning, ours, 1) for k in range(MAX_WARNINGS + 2)]
    caught.append(warnings.WarningMessage("a library said", DeprecationWarning, np.__file__, 1))
    assert recon_warnings(caught) == [f"recon said {k}" for k in range(MAX_WARNINGS)] + ["and 2 more"]


def test_bench_runs_that_agree_up_to_init_share_one(synthetic_scene, tmp_path):
    """bench/real.py: variants of optimize settings start from one run of the stages up to init, copied into each
    run's folder and reused there, with what it warned in each row; a variant of an init setting runs its own."""
    import argparse

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from optimize import parse_variant
    from real import STARTS, run

    from recon.config import preset_settings
    from recon.scene.store import SceneStore

    common = {**preset_settings("tiny"), "optimize.cpu_steps": 2, "init.mvs_min_confirmed": 0.5}
    variants = [parse_variant(v) for v in ("a=default", "b=default,optimize.binocular=0",
                                           "c=default,init.points=300")]
    other = shutil.copytree(synthetic_scene, tmp_path / "cup")  # another capture: its own start
    args = argparse.Namespace(views="3", jobs=2, out=tmp_path / "report.json", images=None, work=tmp_path / "work",
                              note="", root=synthetic_scene.parent)
    assert run(args, variants, common, [synthetic_scene, other]) == 0
    rows = {(r["scene"], r["variant"]): r for r in json.loads(args.out.read_text())["runs"]}
    for scene in ("mug", "cup"):
        start = rows[scene, "a"]["start"]
        assert start.startswith(f"{scene}-3v-") and rows[scene, "b"]["start"] == start
        assert "start" not in rows[scene, "c"] and (args.work / STARTS / start / "scene.json").is_file()
        assert len(rows[scene, "a"]["per_view"]) == rows[scene, "a"]["test_views"] > 0
        graphs = {v: SceneStore(args.work / f"{scene}-3v-{v}").load() for v in "abc"}
        assert [g.name for g in graphs.values()] == [f"{scene}-3v-{v}" for v in "abc"]
        assert graphs["a"].stages["init"] == graphs["b"].stages["init"] != graphs["c"].stages["init"]
        assert graphs["a"].stages["optimize"].key != graphs["b"].stages["optimize"].key
        for v in "abc":  # what the start said is said of each run that reused it, under the run's own name
            said = [w for w in rows[scene, v]["warnings"] if "init.mvs_min_confirmed needs the scene's SfM points" in w]
            assert len(said) == 1 and f"{scene}-3v-{v}" in said[0] and start not in said[0]
    # Again in the same folders with another init setting, one job at a time: the runs' folders are redone there,
    # not copied over, and a start's runs go before the next start is made.
    args.jobs = 1
    assert run(args, variants[:2], {**common, "init.points": 250}, [synthetic_scene, other]) == 0
    rows = {(r["scene"], r["variant"]): r for r in json.loads(args.out.read_text())["runs"]}
    assert not any("start" in rows[scene, v] for scene in ("mug", "cup") for v in "ab")
    cup_start = max(p.stat().st_mtime_ns for p in (args.work / STARTS).glob("cup-3v-a-*/scene.json"))
    assert cup_start > (args.work / "mug-3v-b" / "metrics.json").stat().st_mtime_ns


def test_bench_worker_that_dies_takes_no_other_run_with_it():
    """bench/real.py runs each task in a process of its own: one killed by a signal (a crash in a CUDA extension) is
    that task's error, and the task beside it finishes."""
    import math
    import os

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from real import Workers

    workers = Workers(2)
    workers.start("crash", os.abort)
    workers.start("fine", math.sqrt, 4.0)
    assert not workers.free()
    results: dict = {}
    while workers:
        results.update(workers.finished())
    assert results["fine"] == 2.0
    assert results["crash"] == {"error": "the worker process died (killed by signal 6) before it returned"}


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_bench_stopped_by_a_signal_ends_its_runs(tmp_path, how):
    """bench/real.py under a timeout's SIGTERM, or killed outright: the runs still going end with it rather than go
    on by themselves."""
    import os
    import signal
    import subprocess
    import time

    bench = Path(__file__).resolve().parents[1] / "bench"
    script = tmp_path / "parent.py"
    script.write_text(
        "import signal, sys, time\n"
        f"sys.path.insert(0, {str(bench)!r})\n"
        "from real import Workers, _terminated\n"
        "if __name__ == '__main__':\n"
        "    signal.signal(signal.SIGTERM, _terminated)\n"
        "    workers = Workers(1)\n"
        "    workers.start('sleep', time.sleep, 120)\n"
        "    print(next(iter(workers.running.values()))[0].pid, flush=True)\n"
        "    try:\n"
        "        workers.finished()\n"
        "    finally:\n"
        "        workers.stop()\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    signum = getattr(signal, how)
    parent.send_signal(signum)
    assert parent.wait(timeout=30) == (128 + signum if how == "SIGTERM" else -signum)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the worker outlived the bench")


def test_bench_converts_a_nex_layout_llff_copy_to_the_release_layout(tmp_path):
    """bench/captures.py: a NeX-layout LLFF copy (poses [V, 14], an off-centre principal point) becomes the release
    layout, which recon reads with the principal point at the centre, the focal length halved and the poses kept."""
    import imageio.v3 as iio

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from captures import llff_from_nex

    source = tmp_path / "nex"
    (source / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    poses = []
    for i in range(3):
        iio.imwrite(source / "images" / f"img{i + 1:03d}.png", (rng.random((30, 40, 3)) * 255).astype(np.uint8))
        c2w = np.eye(4)[:3]
        c2w[:, 3] = [i, 0.5 * i, -1.0]
        poses.append(np.concatenate([c2w.ravel(), [2.0, 50.0]]))
    np.save(source / "poses_bounds.npy", np.array(poses))
    np.save(source / "hwf_cxcy.npy", np.array([[30.0], [40.0], [35.0], [35.0], [21.3], [14.0]]))
    done = llff_from_nex(source, tmp_path / "llff")
    assert done["crop"] == [3, 0, 36, 28] and done["size"] == [18, 14]
    assert all(abs(e) <= 0.5 for e in done["centre_error_px"])
    graph = import_scene(tmp_path / "llff", ImportOptions(downscale=8))
    views = graph.views()
    assert [v.name for v in views] == ["image000", "image001", "image002"]
    cam = graph.camera_of(views[2])
    assert (cam.width, cam.height) == (18, 14)
    np.testing.assert_allclose(cam.K[[0, 1, 0, 1], [0, 1, 2, 2]], [17.5, 17.5, 9.0, 7.0])
    np.testing.assert_allclose(camera_center(cam.world_to_camera), [2.0, 1.0, -1.0])  # the translation kept
    stored = np.load(tmp_path / "llff" / "poses_bounds.npy")
    assert stored.shape == (3, 17) and np.allclose(stored[:, 4:15:5], [[8 * 14, 8 * 18, 8 * 17.5]])
    with pytest.raises(ValueError, match=r"images_8 exists"):
        llff_from_nex(source, tmp_path / "llff")
    (source / "images" / "img003.png").unlink()
    with pytest.raises(ValueError, match=r"2 photos for 3 poses"):
        llff_from_nex(source, tmp_path / "again")


@pytest.mark.parametrize("downscale", [1, 2])
def test_bench_converts_a_strecha_capture_to_transforms_json(tmp_path, downscale):
    """bench/captures.py: a Strecha capture's cameras (camera-to-world rotation and centre) import through the
    transforms.json written beside its photos, a world point landing where K R^T (X - C) puts it."""
    from PIL import Image
    from scipy.spatial.transform import Rotation

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from captures import from_strecha

    def camera_file(rotation: np.ndarray, centre: np.ndarray, distortion: float = 0.0) -> str:
        rows = [K[0], K[1], K[2], [distortion, 0, 0], rotation[0], rotation[1], rotation[2], centre]
        return "\n".join(" ".join(f"{v:.12g}" for v in row) for row in rows) + "\n40 26\n"

    source = tmp_path / "fountain-P11"
    (source / "images").mkdir(parents=True)
    (source / "gt_dense_cameras").mkdir()
    K = np.array([[30.0, 0, 19.5], [0, 31.0, 12.0], [0, 0, 1]])
    rng = np.random.default_rng(0)
    cameras = []
    for i in range(2):
        rotation = Rotation.from_rotvec(rng.normal(0, 0.3, 3)).as_matrix()
        centre = np.array([0.5 * i, -0.2, -6.0])
        cameras.append((rotation, centre))
        Image.fromarray((rng.random((26, 40, 3)) * 255).astype(np.uint8)).save(source / "images" / f"{i:04d}.jpg")
        (source / "gt_dense_cameras" / f"{i:04d}.jpg.camera").write_text(camera_file(rotation, centre))
    done = from_strecha(source, tmp_path / "fountain_p11", downscale)
    assert done == {"views": 2, "size": [40 // downscale, 26 // downscale], "downscale": downscale}
    graph = import_scene(tmp_path / "fountain_p11")
    assert graph.source["layout"] == "transforms" and [v.name for v in graph.views()] == ["0000", "0001"]
    point = np.array([0.3, 0.1, 0.0])
    for view, (rotation, centre) in zip(graph.views(), cameras):
        cam = graph.camera_of(view)
        assert (cam.width, cam.height) == (40 // downscale, 26 // downscale)
        by_hand = K @ rotation.T @ (point - centre)
        uv, depth = project(point[None], cam.K, cam.world_to_camera)
        np.testing.assert_allclose(uv[0], by_hand[:2] / by_hand[2] / downscale, atol=1e-6)
        assert depth[0] == pytest.approx(by_hand[2])
    with pytest.raises(ValueError, match="transforms.json exists"):
        from_strecha(source, tmp_path / "fountain_p11", downscale)
    (source / "gt_dense_cameras" / "0000.jpg.camera").write_text(camera_file(*cameras[0], distortion=0.1))
    with pytest.raises(ValueError, match="radial distortion"):
        from_strecha(source, tmp_path / "again", downscale)


def test_bench_poses_reads_a_transforms_json_capture_through_an_idr_copy(synthetic_scene, tmp_path):
    """bench/poses.py: a capture given as transforms.json is written as an IDR copy with the same photos, intrinsics
    and relative rotations."""
    from recon.io import transforms
    from recon.metrics.poses import rotation_angle

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from poses import as_idr

    (tmp_path / "capture").mkdir()
    transforms.write(import_scene(synthetic_scene), tmp_path / "capture" / "transforms.json")
    given = import_scene(tmp_path / "capture")
    copy = import_scene(as_idr(tmp_path / "capture", tmp_path / "scenes", exif=False))
    assert [Path(v.image).name for v in copy.views()] == [Path(v.image).name for v in given.views()]
    first = [g.camera_of(g.views()[0]).world_to_camera[:3, :3] for g in (given, copy)]
    for a, b in zip(given.views(), copy.views()):
        cam_a, cam_b = given.camera_of(a), copy.camera_of(b)
        np.testing.assert_allclose(cam_b.K, cam_a.K, atol=1e-6)
        turn_a, turn_b = cam_a.world_to_camera[:3, :3] @ first[0].T, cam_b.world_to_camera[:3, :3] @ first[1].T
        assert rotation_angle(turn_a @ turn_b.T) < 1e-4


def test_bench_render_errors_tell_a_shifted_render_from_a_colour_cast():
    """bench/render_errors.py: a render one pixel off its photo gains most from the shift, one with a colour cast
    from the colour fit; a render that is right scores above the photo blurred."""
    from scipy.ndimage import gaussian_filter

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from render_errors import view_errors

    rng = np.random.default_rng(0)
    photo = np.clip(gaussian_filter(rng.random((48, 64, 3)), (1.5, 1.5, 0)) * 3 - 1, 0, 1).astype(np.float32)
    mask = np.zeros((48, 64), bool)
    mask[8:40, 8:56] = True
    moved = np.roll(photo, 1, axis=1)  # the render one pixel right of the photo
    off = view_errors(moved, photo, mask, max_shift=2.0, blur=2.0)
    assert off["best_shift"]["dx"] == 1.0 and off["best_shift"]["dy"] == 0.0
    assert off["best_shift"]["psnr"] > 60 and off["affine_colour"] < off["psnr"] + 1
    cast = view_errors(photo * 0.8 + 0.1, photo, mask, max_shift=1.0, blur=2.0)
    assert cast["affine_colour"] > 60 and cast["best_shift"]["psnr"] < cast["psnr"] + 0.1
    assert cast["blurred_photo"] < view_errors(photo, photo, mask, 0.5, 2.0)["psnr"]


def test_bench_render_errors_scores_photos_without_renders(synthetic_scene, tmp_path):
    """bench/render_errors.py without renders: each photo blurred against itself over its mask (finite, below an
    identical image's 100 dB, lower for a wider blur, its own at each down-sampling); a view whose mask is empty is
    left out."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from render_errors import blurred, photo_and_mask, yardsticks

    from recon.io import import_scene
    from recon.io.images import read_mask, write_mask

    scene = shutil.copytree(synthetic_scene, tmp_path / "mug")
    graph = import_scene(scene)
    empty = graph.views()[0]
    write_mask(graph.resolve(empty.mask), np.zeros_like(read_mask(graph.resolve(empty.mask))))
    graph = import_scene(scene)
    narrow, wide, half = yardsticks(graph, 1, 1.0), yardsticks(graph, 1, 3.0), yardsticks(graph, 2, 1.0)
    assert set(narrow) == {v.name for v in graph.views()} - {empty.name} == set(wide) == set(half)
    assert all(0 < wide[k]["blurred_photo"] < narrow[k]["blurred_photo"] < 100 for k in narrow)
    view = graph.views()[1]
    photo, mask = photo_and_mask(graph, view, 2)
    assert photo.shape[:2] == mask.shape and 0 < mask.mean() < 1
    assert half[view.name]["blurred_photo"] == blurred(photo, mask, 1.0) != blurred(photo, np.ones_like(mask), 1.0)


def test_json_objects_a_user_gives_are_read_or_refused_in_one_line(tmp_path):
    from recon.files import read_json_object

    path = tmp_path / "split.json"
    path.write_bytes(b'\xef\xbb\xbf{"train": [1]}')  # with a byte-order mark, as some editors save
    assert read_json_object(path, "a split") == {"train": [1]}
    for content, message in ((b'{"a": "\xff"}', "not UTF-8 text"), (b"{'a': 1}", "cannot read it as JSON"),
                             (b'{"a": ' + b"9" * 5000 + b"}", "cannot read it as JSON"),
                             (b"[" * 100_000, "cannot read it as JSON"),
                             (b"[1, 2]", "expected a JSON object, a split")):
        path.write_bytes(content)
        with pytest.raises(InputError, match=message):
            read_json_object(path, "a split")
    with pytest.raises(InputError, match="cannot read it"):
        read_json_object(tmp_path, "a split")  # a folder


@pytest.mark.parametrize("calibration", ["cal18", "mvsnet"])
def test_dtu_rectified(synthetic_scene, tmp_path, calibration):
    scene = build_rectified(synthetic_scene, tmp_path / "DTU", calibration=calibration)
    graph = import_scene(scene)
    assert graph.source["layout"] == "dtu-rectified"
    assert graph.meta["scan"] == 24
    assert all(v.mask is not None and v.name.endswith("_3_r5000") for v in graph.views())
    assert_same_cameras(graph, dataset_cameras(synthetic_scene), atol=1e-5)
    centers = np.stack([camera_center(c.world_to_camera) for c in graph.cameras()])
    assert np.linalg.norm(centers, axis=1).mean() == pytest.approx(3.0)
    other_light = import_scene(scene, ImportOptions(light=0))
    assert other_light.views()[0].name.endswith("_0_r5000")


def test_spare_scene(synthetic_scene, tmp_path):
    scene = build_spare(synthetic_scene, tmp_path / "spare")
    graph = import_scene(scene)
    assert graph.source["layout"] == "spare"
    roles = {v.index: (v.role, v.image is not None) for v in graph.views()}
    assert roles == {1: ("train", True), 4: ("train", True), 7: ("train", True), 2: ("test", False), 9: ("test", False)}
    assert graph.meta["spare"]["track"] == 1
    assert_same_cameras(graph, dataset_cameras(synthetic_scene), indices=[1, 2, 4, 7, 9], atol=1e-5)
    # A SpaRe folder that also holds another layout's file is read as SpaRe when a SpaRe split is asked for.
    (scene / "transforms.json").write_text("{}")
    split = graph.meta["split"]["name"]
    assert import_scene(scene, ImportOptions(spare_split=split)).source["layout"] == "spare"


def test_images_only_folder(synthetic_scene, tmp_path):
    graph = import_scene(build_images(synthetic_scene, tmp_path / "photos"))
    assert graph.source["layout"] == "images"
    assert len(graph.views()) == 12 and all(v.camera is None for v in graph.views())


def _rotation(angle_deg: float, axis: int) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz"[axis], angle_deg, degrees=True).as_matrix()


def test_llff_cameras_project_as_computed_by_hand(tmp_path):
    # Two cameras in LLFF's convention: rotation columns are the camera's down, right and backwards axes.
    c2w = [np.concatenate([_rotation(a, 1), np.array([[x], [0.5], [-2.0]])], 1) for a, x in ((0, 0.0), (20, 1.0))]
    root = write_llff(tmp_path / "capture", c2w, full_size=(64, 48), focal=50.0, factor=4, bounds=(1.5, 9.0),
                      masks=True)
    graph = import_scene(root)
    assert graph.source["layout"] == "llff" and len(graph.views()) == 2
    assert all(v.mask is not None for v in graph.views())
    point = np.array([0.3, -0.2, -7.0])
    for view, pose in zip(graph.views(), c2w):
        cam = graph.camera_of(view)
        assert (cam.width, cam.height) == (16, 12) and (cam.near, cam.far) == (1.5, 9.0)
        down, right, back = pose[:, :3].T @ (point - pose[:, 3])  # the point on LLFF's camera axes
        by_hand = np.array([8.0 + 12.5 * right / -back, 6.0 + 12.5 * down / -back])  # focal 50 / 4, centre (8, 6)
        uv, depth = project(point[None], cam.K, cam.world_to_camera)
        np.testing.assert_allclose(uv[0], by_hand, atol=1e-9)
        assert depth[0] == pytest.approx(-back)


def test_llff_reads_the_images_folder_that_fits_the_down_sampling(tmp_path):
    c2w = [np.concatenate([np.eye(3), np.zeros((3, 1))], 1)]
    root = write_llff(tmp_path / "capture", c2w, full_size=(64, 48), focal=40.0, factor=2)
    write_llff(tmp_path / "copy", c2w, full_size=(64, 48), focal=40.0, factor=8)
    shutil.copytree(tmp_path / "copy" / "images_8", root / "images_8")
    for downscale, folder, size in ((1, "images_2", 32), (2, "images_2", 32), (4, "images_2", 16), (8, "images_8", 8)):
        graph = import_scene(root, ImportOptions(downscale=downscale))
        cam = graph.cameras()[0]
        assert graph.meta["llff"]["images"] == folder and cam.width == size
        assert cam.K[0, 0] == pytest.approx(40.0 * size / 64)
    with pytest.raises(InputError, match="cannot be made from images_2, images_8"):
        import_scene(root, ImportOptions(downscale=3))


def test_llff_rejects_a_pose_count_that_does_not_match_the_images(tmp_path):
    c2w = [np.concatenate([np.eye(3), np.zeros((3, 1))], 1)] * 2
    root = write_llff(tmp_path / "capture", c2w, full_size=(32, 24), focal=40.0, factor=1)
    np.save(root / "poses_bounds.npy", np.load(root / "poses_bounds.npy")[:1])
    with pytest.raises(InputError, match="1 poses but 2 images"):
        import_scene(root)


@pytest.mark.parametrize("name, views, size, masks", [("llff_fern", 20, (504, 378), False),
                                                      ("ethiopian_head", 66, (1000, 1000), True)])
def test_llff_real_captures(name, views, size, masks):
    path = REALDATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is not on this machine")
    graph = import_scene(path)
    assert graph.source["layout"] == "llff" and len(graph.views()) == views
    assert {(c.width, c.height) for c in graph.cameras()} == {size}
    assert all((v.mask is not None) == masks for v in graph.views())
    from recon.scene.frames import scene_bounds

    centre, _ = scene_bounds(graph, graph.views())
    for cam in graph.cameras():  # the region every camera looks at lies in front of it, within its bounds
        depth = (cam.world_to_camera[:3, :3] @ centre + cam.world_to_camera[:3, 3])[2]
        assert 0.5 * cam.near < depth < 1.5 * cam.far


def test_unknown_layout_lists_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unknown scene layout; looked for transforms.*colmap.*dtu-idr.*spare.*images"):
        detect_layout(tmp_path)


def test_idr_camera_without_image_and_image_without_camera(synthetic_scene, tmp_path):
    scene = tmp_path / "scan1"
    shutil.copytree(synthetic_scene, scene)
    (scene / "image" / "000011.png").unlink()
    (scene / "mask" / "011.png").unlink()
    with pytest.raises(InputError, match="world_mat_11 has no image"):
        import_scene(scene)
    shutil.rmtree(scene)
    shutil.copytree(synthetic_scene, scene)
    mats = dict(np.load(scene / "cameras.npz"))
    del mats["world_mat_11"]
    np.savez(scene / "cameras.npz", **mats)
    with pytest.raises(InputError, match=r"000011.png: image has no camera \(no world_mat_11"):
        import_scene(scene)
