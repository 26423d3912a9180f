"""The recon command: runs, resumes, exports round-trip, and bad input gets one line and exit 2."""

from __future__ import annotations

import json
import os
import shutil
import socket

import numpy as np
import pytest
from builders import build_colmap, build_transforms
from clitools import expect_error, run
from PIL import Image

from recon.io import import_scene
from recon.scene.store import SceneStore


def test_run_writes_scene_config_and_metrics(synthetic_scene, tmp_path, capsys):
    assert run("run", synthetic_scene, "--views", 4, "--out", tmp_path / "out", "--until", "views") == 0
    out = tmp_path / "out" / "mug"
    graph = SceneStore(out).load()
    assert len(graph.views("train")) == 4 and len(graph.views("test")) == 8
    assert (out / "config.yaml").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["stages"]["views"]["train"]) == 4
    assert "views" in capsys.readouterr().err  # the summary table


def test_overrides_after_one_set_or_one_per_set_all_count(synthetic_scene, tmp_path):
    import yaml

    argv = [("--set", "optimize.dropout=0.1", "seed=3", "--set", "init.points=321"),
            ("--set", "optimize.dropout=0.1", "--set", "seed=3", "init.points=321")]
    for k, sets in enumerate(argv):
        assert run("run", synthetic_scene, "--views", 3, "--out", tmp_path / str(k), "--until", "views", *sets) == 0
        cfg = yaml.safe_load((tmp_path / str(k) / "mug" / "config.yaml").read_text())
        assert (cfg["optimize"]["dropout"], cfg["seed"], cfg["init"]["points"]) == (0.1, 3, 321)


def test_the_device_of_a_preset_or_set_holds_unless_the_flag_is_given(synthetic_scene, tmp_path):
    import yaml

    cases = [((), "auto"), (("--config", "tiny"), "cpu"), (("--set", "device=cpu"), "cpu"),
             (("--config", "tiny", "--device", "auto"), "auto"), (("--set", "device=cpu", "--device", "auto"), "auto")]
    for k, (flags, device) in enumerate(cases):
        assert run("run", synthetic_scene, "--views", 3, "--out", tmp_path / str(k), "--until", "views", *flags) == 0
        assert yaml.safe_load((tmp_path / str(k) / "mug" / "config.yaml").read_text())["device"] == device, flags


def test_a_flag_that_disagrees_with_a_set_of_the_same_key_wins_and_says_so(synthetic_scene, tmp_path, capsys):
    import yaml

    assert run("run", synthetic_scene, "--views", 3, "--set", "views.count=5", "--out", tmp_path / "a",
               "--until", "views") == 0
    assert yaml.safe_load((tmp_path / "a" / "mug" / "config.yaml").read_text())["views"]["count"] == 3
    assert "--views 3 and --set views.count=5 disagree: the flag wins" in capsys.readouterr().err
    assert run("run", synthetic_scene, "--views", 3, "--set", "views.count=3", "--out", tmp_path / "b",
               "--until", "views") == 0
    assert "the flag wins" not in capsys.readouterr().err  # the same value twice is no conflict


def test_rerun_resumes_and_reruns_what_changed(synthetic_scene, tmp_path, monkeypatch):
    import torch

    from recon import pipeline
    from recon.config import load_config
    from recon.pipeline import run_scene

    small = {"init.source": "hull", "init.points": 200, "init.hull_resolution": 24}
    first = run_scene(synthetic_scene, load_config("default", {"views.count": 3, **small}), tmp_path, until="init")
    assert [o.status for o in first.outcomes] == ["ran", "ran", "ran", "ran"]
    again = run_scene(synthetic_scene, load_config("default", {"views.count": 3, **small}), tmp_path, until="init")
    assert [o.status for o in again.outcomes] == ["reused", "reused", "reused", "reused"]
    # A folder copied under another name is reused there, and takes that name.
    shutil.copytree(first.out_dir, tmp_path / "copied")
    copied = run_scene(synthetic_scene, load_config("default", {"views.count": 3, **small}), tmp_path, name="copied",
                       until="init")
    assert [o.status for o in copied.outcomes] == ["reused", "reused", "reused", "reused"]
    assert SceneStore(tmp_path / "copied").load().name == "copied" == copied.graph.name
    changed = run_scene(synthetic_scene, load_config("default", {"views.count": 5, **small}), tmp_path, until="init")
    assert [o.status for o in changed.outcomes] == ["reused", "ran", "ran", "ran"]
    init_only = run_scene(synthetic_scene, load_config("default", {"views.count": 5, **small, "init.points": 300}),
                          tmp_path, until="init")
    assert [o.status for o in init_only.outcomes] == ["reused", "reused", "reused", "ran"]
    assert len(changed.graph.views("train")) == 5
    # A shorter run keeps the later stages' results only where its settings would reuse them (config.yaml says so).
    kept = run_scene(synthetic_scene, load_config("default", {"views.count": 5, **small, "init.points": 300}),
                     tmp_path, until="views")
    assert "init" in kept.graph.stages and "points/init" in kept.graph.nodes
    with pytest.warns(UserWarning, match="the results of init came from settings other than this run's"):
        stale = run_scene(synthetic_scene, load_config("default", {"views.count": 5, **small, "init.points": 250}),
                          tmp_path, until="views")
    assert "init" not in stale.graph.stages and "points/init" not in stale.graph.nodes
    assert [(o.name, o.status) for o in stale.outcomes][-1] == ("init", "dropped")
    saved = json.loads((stale.out_dir / "metrics.json").read_text())["stages"]
    assert "init" not in saved and SceneStore(stale.out_dir).load().stages.keys() == {"views", "poses"}
    assert [o.status for o in run_scene(synthetic_scene, load_config(
        "default", {"views.count": 5, **small, "init.points": 300}), tmp_path, until="init").outcomes] == \
        ["reused", "reused", "reused", "ran"]
    # The same run on CUDA (the hull is carved on the CPU either way): what was computed on the CPU is not reused.
    monkeypatch.setattr(pipeline, "resolve_device", lambda name: torch.device("cuda"))
    on_gpu = run_scene(synthetic_scene, load_config("default", {"views.count": 5, **small, "init.points": 300}),
                       tmp_path, until="init")
    assert [o.status for o in on_gpu.outcomes] == ["reused", "reused", "reused", "ran"]
    # A shorter run on the CPU keeps what CUDA made with the same settings: config.yaml names no device.
    monkeypatch.undo()
    check = run_scene(synthetic_scene, load_config("default", {"views.count": 5, **small, "init.points": 300}),
                      tmp_path, until="views")
    assert check.graph.stages["init"].key == on_gpu.graph.stages["init"].key


def test_transforms_round_trip_through_run_and_export(synthetic_scene, tmp_path):
    root = build_transforms(synthetic_scene, tmp_path / "tf")
    assert run("run", root, "--views", 4, "--out", tmp_path / "out", "--until", "views") == 0
    assert run("export", tmp_path / "out" / "tf", "--format", "transforms", "--to",
               tmp_path / "back" / "transforms.json") == 0
    before = json.loads((root / "transforms.json").read_text())
    after = json.loads((tmp_path / "back" / "transforms.json").read_text())
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h", "aabb_scale"):
        assert after[key] == pytest.approx(before[key], abs=1e-6)
    assert len(after["frames"]) == len(before["frames"])
    for a, b in zip(after["frames"], before["frames"]):
        np.testing.assert_allclose(a["transform_matrix"], b["transform_matrix"], atol=1e-6)
        assert (tmp_path / "back" / a["file_path"]).resolve() == (root / b["file_path"]).resolve()


def test_synthetic_scene_round_trips_through_export(synthetic_scene, tmp_path, capsys):
    assert run("run", synthetic_scene, "--views", 3, "--out", tmp_path / "out", "--until", "views") == 0
    capsys.readouterr()
    expect_error(capsys, ["export", tmp_path / "out" / "mug", "--frame", "world"],
                 "--frame applies to the mesh (--format ply, obj or glb); --format transforms is written in the "
                 "dataset's frame")
    assert run("export", tmp_path / "out" / "mug", "--frame", "dataset") == 0
    exported = import_scene(tmp_path / "out" / "mug" / "export" / "transforms.json")
    truth = import_scene(synthetic_scene)
    from recon.scene.camera import transform_world_to_camera

    for a, b in zip(exported.cameras(), truth.cameras()):
        np.testing.assert_allclose(a.K, b.K, atol=1e-6)
        np.testing.assert_allclose(a.world_to_camera, transform_world_to_camera(b.world_to_camera, truth.to_dataset),
                                   atol=1e-6)


def test_colmap_export_reads_back_in_pycolmap(synthetic_scene, tmp_path):
    import pycolmap

    root = build_colmap(synthetic_scene, tmp_path / "c")
    assert run("run", root, "--out", tmp_path / "out", "--until", "views") == 0
    assert run("export", tmp_path / "out" / "c", "--format", "colmap", "--to", tmp_path / "model") == 0
    original = pycolmap.Reconstruction(str(root / "sparse" / "0"))
    exported = pycolmap.Reconstruction(str(tmp_path / "model"))
    assert exported.num_images() == original.num_images() and exported.num_points3D() == 50
    by_name = {im.name: im for im in original.images.values()}
    for im in exported.images.values():
        np.testing.assert_allclose(im.cam_from_world().matrix(), by_name[im.name].cam_from_world().matrix(), atol=1e-6)


def test_views_split_and_strategies(synthetic_scene, tmp_path):
    from recon.config import load_config
    from recon.pipeline import run_scene

    graph = run_scene(synthetic_scene, load_config("default", {"views.count": 3, "views.strategy": "even"}), tmp_path,
                      until="views").graph
    assert [v.index for v in graph.views("train")] == [0, 6, 11]
    graph = run_scene(synthetic_scene, load_config("default", {"views.count": 3}), tmp_path / "b", until="views").graph
    from itertools import combinations

    from recon.scene.camera import camera_center

    centers = {v.index: camera_center(graph.camera_of(v).world_to_camera) for v in graph.views()}
    spread = lambda ids: min(np.linalg.norm(centers[a] - centers[b]) for a, b in combinations(ids, 2))  # noqa: E731
    chosen = [v.index for v in graph.views("train")]
    best = max(spread(ids) for ids in combinations(centers, 3))
    assert spread(chosen) >= 0.5 * best  # farthest-point sampling is within 2x of the widest spread
    mean = np.mean(list(centers.values()), axis=0)
    first = min(centers, key=lambda i: np.linalg.norm(centers[i] - mean))
    assert first in chosen
    from recon.errors import InputError

    with pytest.raises(InputError, match="split dtu needs view 25 but the scene has views 0..11"):
        run_scene(synthetic_scene, load_config("default", {"views.count": 2, "views.split": "dtu"}), tmp_path / "c")
    assert not (tmp_path / "c").exists()
    missing = tmp_path / "nowhere" / "split.json"
    with pytest.raises(InputError, match=f"split file {missing} not found; the bundled splits: dtu, llff"):
        run_scene(synthetic_scene, load_config("default", {"views.split": str(missing)}), tmp_path / "d")
    with pytest.raises(InputError, match="--spare-split .* chooses among a SpaRe scene's split files, and this scene "
                                         "is in the dtu-idr layout"):
        run_scene(synthetic_scene, load_config("default", {"data.spare_split": "sparse_3"}), tmp_path / "e")
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()
    for text, message in (("[25, 22]", "expected a JSON object, with 'train' and 'test' id lists"),
                          ("{'train'", "cannot read it as JSON")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InputError, match=message):
            run_scene(synthetic_scene, load_config("default", {"views.split": str(tmp_path / "bad.json")}),
                      tmp_path / "f")


def test_synth_command_writes_the_idr_layout_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "knot"
    assert run("data", "synth", out, "--scene", "knot", "--views", 3, "--width", 32, "--height", 24, "--no-aux") == 0
    assert sorted(p.name for p in (out / "image").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert (out / "gt" / "mesh.ply").is_file() and (out / "gt" / "points.ply").is_file()
    assert not (out / "depth").exists()
    assert run("data", "synth", out, "--scene", "knot") == 2
    assert "already exists" in capsys.readouterr().err
    small = ("--views", 2, "--width", 16, "--height", 12, "--no-aux")
    assert run("data", "synth", out, "--scene", "mug", *small, "--force") == 0  # its own earlier output: replaced
    assert len(list((out / "image").iterdir())) == 2
    capsys.readouterr()
    photos = tmp_path / "photos"  # not a synthetic scene: --force leaves it be
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"mine")
    expect_error(capsys, ["data", "synth", photos, *small, "--force"], "is not a synthetic scene recon wrote")
    assert (photos / "a.jpg").read_bytes() == b"mine"
    expect_error(capsys, ["data", "synth", tmp_path / "s", *small, "--seed", -1], "a seed of 0 or more, not -1")
    every = tmp_path / "every"  # --scene all checks each scene's folder before it renders any
    (every / "knot").mkdir(parents=True)
    (every / "knot" / "notes.txt").write_text("mine")
    expect_error(capsys, ["data", "synth", every, "--scene", "all", *small, "--force"], "every/knot: exists")
    assert sorted(p.name for p in every.iterdir()) == ["knot"]


def test_synthetic_ground_truth_agrees_with_masks_and_depth(synthetic_scene):
    from scipy.spatial import cKDTree

    from recon.io.ply import read_points
    from recon.scene.camera import project

    graph = import_scene(synthetic_scene)
    points, _ = read_points(synthetic_scene / "gt" / "points.ply")  # dataset frame (mm), 3 mm apart
    tree = cKDTree(points)
    to_world = np.linalg.inv(graph.to_dataset)
    world = points @ to_world[:3, :3].T + to_world[:3, 3]
    for view in graph.views()[:4]:
        cam = graph.camera_of(view)
        uv, _ = project(world, cam.K, cam.world_to_camera)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
        px = uv[inside].astype(int)
        mask = np.asarray(Image.open(view.mask)) > 127
        assert mask[px[:, 1], px[:, 0]].mean() > 0.97  # every surface point lands on the object
        # Every object pixel's depth, lifted to 3D, lies on the ground-truth surface.
        depth = np.load(synthetic_scene / "depth" / f"{view.index:06d}.npz")["depth"] / 100.0
        v, u = np.nonzero(mask & (depth > 0))
        rays = np.stack([u + 0.5, v + 0.5, np.ones_like(u, dtype=float)], axis=1) @ np.linalg.inv(cam.K).T
        cam_pts = rays * depth[v, u][:, None]
        w2c = cam.world_to_camera
        pts = (cam_pts - w2c[:3, 3]) @ w2c[:3, :3]
        pts = pts @ graph.to_dataset[:3, :3].T + graph.to_dataset[:3, 3]
        dist, _ = tree.query(pts)
        assert np.median(dist) < 2.0 and np.mean(dist < 4.0) > 0.95


# --- bad input: one line naming the file and the problem, exit 2, nothing written ---------------


@pytest.fixture
def transforms_scene(synthetic_scene, tmp_path):
    return build_transforms(synthetic_scene, tmp_path / "tf")


def test_bad_missing_image_under_strict(transforms_scene, tmp_path, capsys):
    (transforms_scene / "images" / "000002.png").unlink()
    expect_error(capsys, ["run", transforms_scene, "--strict", "--out", tmp_path / "out"],
                 "name images that do not exist: images/000002.png", tmp_path / "out" / "tf")


def test_bad_unreadable_image(transforms_scene, tmp_path, capsys):
    (transforms_scene / "images" / "000004.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    expect_error(capsys, ["run", transforms_scene, "--out", tmp_path / "out"], "000004.png: cannot read image",
                 tmp_path / "out" / "tf")


def test_bad_images_of_different_sizes(transforms_scene, tmp_path, capsys):
    Image.new("RGB", (64, 48)).save(transforms_scene / "images" / "000005.png")
    expect_error(capsys, ["run", transforms_scene, "--out", tmp_path / "out"],
                 "000005.png: image is 64x48 but its camera expects 80x60", tmp_path / "out" / "tf")


def test_bad_blank_photo_among_photos_of_another_size(synthetic_scene, tmp_path, capsys):
    # Photos without cameras may differ in size (each size is its own camera); a blank one has no features.
    photos = tmp_path / "photos"
    shutil.copytree(synthetic_scene / "image", photos)
    Image.new("RGB", (64, 48)).save(photos / "000007.png")
    expect_error(capsys, ["run", photos, "--out", tmp_path / "out", "--until", "poses"],
                 "000007 (0 features: too little texture or too small)")


def test_a_refused_geometry_still_names_a_photo_that_could_not_take_part(synthetic_scene, tmp_path, capsys,
                                                                           monkeypatch):
    """When the registered views' geometry is refused, a view it never placed (a blank photo) keeps its own reason."""
    photos = tmp_path / "photos"
    shutil.copytree(synthetic_scene / "image", photos)
    Image.new("RGB", (64, 48)).save(photos / "000007.png")
    monkeypatch.setattr("recon.sfm.reconstruct.refusal", lambda *args: "a refused geometry")
    line = expect_error(capsys, ["run", photos, "--out", tmp_path / "out", "--until", "poses"],
                        "no poses: a refused geometry; besides, ")
    assert "000007 (0 features: too little texture or too small)" in line


def test_bad_fewer_images_than_views(synthetic_scene, tmp_path, capsys):
    expect_error(capsys, ["run", synthetic_scene, "--views", 20, "--out", tmp_path / "out"],
                 "12 usable images, fewer than --views 20", tmp_path / "out" / "mug")


def test_bad_camera_without_image(synthetic_scene, tmp_path, capsys):
    scene = tmp_path / "scan9"
    shutil.copytree(synthetic_scene, scene)
    (scene / "image" / "000011.png").unlink()
    (scene / "mask" / "011.png").unlink()
    expect_error(capsys, ["run", scene, "--out", tmp_path / "out"], "cameras.npz: world_mat_11 has no image",
                 tmp_path / "out" / "scan9")


def test_bad_image_without_camera(synthetic_scene, tmp_path, capsys):
    scene = tmp_path / "scan9"
    shutil.copytree(synthetic_scene, scene)
    shutil.copy(scene / "image" / "000011.png", scene / "image" / "000012.png")
    shutil.copy(scene / "mask" / "011.png", scene / "mask" / "012.png")
    expect_error(capsys, ["run", scene, "--out", tmp_path / "out"], "000012.png: image has no camera",
                 tmp_path / "out" / "scan9")


@pytest.mark.parametrize("value,problem", [(float("nan"), "NaN"), (0.0, "not invertible")])
def test_bad_pose(transforms_scene, tmp_path, capsys, value, problem):
    meta = json.loads((transforms_scene / "transforms.json").read_text())
    if np.isnan(value):
        meta["frames"][3]["transform_matrix"][0][0] = value
    else:
        meta["frames"][3]["transform_matrix"] = [[0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 0, 3], [0, 0, 0, 1]]
    (transforms_scene / "transforms.json").write_text(json.dumps(meta))
    line = expect_error(capsys, ["run", transforms_scene, "--out", tmp_path / "out"], problem, tmp_path / "out" / "tf")
    assert "frame 3" in line and "transforms.json" in line


def test_bad_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    expect_error(capsys, ["run", tmp_path / "empty", "--out", tmp_path / "out"], "empty: folder is empty")
    assert not (tmp_path / "out").exists()


def test_bad_output_folder_held_by_another_run(synthetic_scene, tmp_path, capsys):
    out = tmp_path / "out" / "mug"
    out.mkdir(parents=True)
    (out / ".lock").write_text(f"{os.getppid()} {socket.gethostname()}\n")
    expect_error(capsys, ["run", synthetic_scene, "--out", tmp_path / "out"], "output folder is held by another run",
                 out)


def test_bad_preset_override_and_name(synthetic_scene, tmp_path, capsys):
    expect_error(capsys, ["run", synthetic_scene, "--config", "nope", "--out", tmp_path / "o"], "unknown preset 'nope'")
    expect_error(capsys, ["run", synthetic_scene, "--set", "views.nope=1", "--out", tmp_path / "o"],
                 "unknown config key views.nope")
    twice = tmp_path / "twice.yaml"  # YAML itself would keep the second section and drop optimize.steps
    twice.write_text("base: default\noptimize:\n  steps: 10\ninit:\n  points: 5\noptimize:\n  dropout: 0.1\n")
    expect_error(capsys, ["run", synthetic_scene, "--config", twice, "--out", tmp_path / "o"],
                 "twice.yaml, line 6: not valid YAML ('optimize' is given twice)")
    expect_error(capsys, ["run", synthetic_scene, "--set", "preset=quality", "--out", tmp_path / "o"],
                 "a preset is chosen with --config quality")
    for name in ("../escaped", "a/b", "..", ""):
        expect_error(capsys, ["run", synthetic_scene, "--name", name, "--out", tmp_path / "o"],
                     f"--name {name}: a folder name is wanted")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "o" / "a").exists()
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text("base: defualt\n")
    expect_error(capsys, ["run", synthetic_scene, "--config", orphan, "--out", tmp_path / "o"],
                 "orphan.yaml: base: unknown preset 'defualt'")
    merged = tmp_path / "merged.yaml"  # a merge key's values may be given again: that is not a key given twice
    merged.write_text("base: default\noptimize:\n  <<: {steps: 10, dropout: 0.1}\n  steps: 20\n")
    from recon.config import load_config

    assert (load_config(str(merged)).optimize.steps, load_config(str(merged)).optimize.dropout) == (20, 0.1)
    broken = tmp_path / "broken.yaml"
    broken.write_text("base: default\noptimize:\n  steps: [10\n")
    expect_error(capsys, ["run", synthetic_scene, "--config", broken, "--out", tmp_path / "o"], "broken.yaml, line 4")


def test_photos_without_cameras_given_poses_or_unregistered_views_fail_in_one_line(synthetic_scene, tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(synthetic_scene / "image", photos)
    expect_error(capsys, ["run", photos, "--views", 3, "--poses", "given", "--out", tmp_path / "out"],
                 "--poses given, but 12 views have no camera", tmp_path / "out" / "photos")
    assert not (tmp_path / "out").exists()
    # 80x60 renders are too small for SIFT: each view is named with the reason, no traceback.
    expect_error(capsys, ["run", photos, "--views", 3, "--out", tmp_path / "out"],
                 "3 of 3 views did not register: 000000 (")


def test_synth_sphere_layout_surrounds_the_object(tmp_path):
    from recon.scene.camera import camera_center

    out = tmp_path / "gear"
    assert run("data", "synth", out, "--scene", "gear", "--layout", "sphere", "--views", 8, "--width", 32, "--height",
               24,
               "--no-aux") == 0
    graph = import_scene(out)
    centers = np.stack([camera_center(c.world_to_camera) for c in graph.cameras()])
    assert (centers[:, 2] > 0.5).any() and (centers[:, 2] < -0.5).any()  # above and below the object
    assert json.loads((out / "gt" / "scene.json").read_text())["platform"] is False
