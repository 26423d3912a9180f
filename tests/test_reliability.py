"""Reliability: bad input and hostile environments get one line and exit status 2 (or are accepted, as each
test states), never a traceback and never a partial output folder; photos keep their colours whatever their
PIL mode and EXIF orientation."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from builders import to_binary
from clitools import expect_error, run
from PIL import Image

from recon.io import images as image_io
from recon.scene.camera import intrinsics_matrix, look_at, opengl_from_world_to_camera, quaternion_from_rotation
from recon.scene.store import LOCK_FILE, SceneStore

# Four flat blocks of distinct colours (8x8 each): every mode stores them without dithering or blur inside a block.
BLOCK_COLOURS = np.array([[255, 0, 0], [0, 128, 255], [20, 200, 60], [250, 250, 250]], dtype=np.uint8)


def block_image() -> np.ndarray:
    """uint8 [16, 16, 3]: the four colour blocks, top-left, top-right, bottom-left, bottom-right."""
    out = np.zeros((16, 16, 3), dtype=np.uint8)
    for k, colour in enumerate(BLOCK_COLOURS):
        out[8 * (k // 2): 8 * (k // 2) + 8, 8 * (k % 2): 8 * (k % 2) + 8] = colour
    return out


def block_centres(pixels: np.ndarray) -> np.ndarray:
    """[4, 3]: the colour at the centre of each block of :func:`block_image`'s layout."""
    return np.stack([pixels[8 * (k // 2) + 4, 8 * (k % 2) + 4] for k in range(4)])


def grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as PIL converts RGB to L."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


# --- small scenes, written directly (no rendering) ------------------------------------------------------------


def ring_cameras(count: int, width: int, height: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(K, world_to_camera) of ``count`` cameras on a ring of radius 3, 1 above the origin, looking at it."""
    K = intrinsics_matrix(width, width, width / 2, height / 2)
    out = []
    for i in range(count):
        angle = 2 * np.pi * i / count
        out.append((K, look_at(np.array([3 * np.cos(angle), 3 * np.sin(angle), 1.0]), np.zeros(3))))
    return out


def photo(seed: int, width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3]: smooth random colours (blocks of 4x4 pixels)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(-(-height // 4), -(-width // 4), 3), dtype=np.uint8)
    return np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)[:height, :width]


def tiny_transforms(root: Path, count: int = 5, width: int = 24, height: int = 18) -> Path:
    """A nerfstudio scene: ``count`` ring cameras, shared intrinsics, photos in images/."""
    (root / "images").mkdir(parents=True)
    frames = []
    cameras = ring_cameras(count, width, height)
    for i, (_, w2c) in enumerate(cameras):
        Image.fromarray(photo(i, width, height)).save(root / "images" / f"{i:03d}.png")
        frames.append({"file_path": f"images/{i:03d}.png",
                       "transform_matrix": opengl_from_world_to_camera(w2c).tolist()})
    K = cameras[0][0]
    meta = {"fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
            "w": width, "h": height, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def entries(folder: Path) -> list[str]:
    """Everything under ``folder``, relative, sorted (empty when it does not exist)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def scene(tmp_path) -> Path:
    return tiny_transforms(tmp_path / "tiny")


# --- images: every PIL mode means the same colours it shows -------------------------------------------


@pytest.mark.parametrize("mode,suffix,options", [("RGB", ".png", {}), ("RGBA", ".png", {}), ("P", ".png", {}),
                                                 ("P", ".png", {"transparency": 1}), ("CMYK", ".jpg", {"quality": 100}),
                                                 ("RGB", ".jpg", {"quality": 100})])
def test_colour_modes_read_as_their_colours(tmp_path, mode, suffix, options):
    path = tmp_path / f"photo{suffix}"
    source = Image.fromarray(block_image())
    # An adaptive palette holds the four colours exactly.
    converted = source.convert("P", palette=Image.Palette.ADAPTIVE, colors=4) if mode == "P" else source.convert(mode)
    converted.save(path, **options)
    with Image.open(path) as stored:
        assert stored.mode == mode
    got = block_centres(image_io.read_image(path)) * 255
    np.testing.assert_allclose(got, BLOCK_COLOURS, atol=3)


def test_palette_with_alpha_reads_as_its_colours():
    image = Image.fromarray(block_image()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).convert("PA")
    np.testing.assert_allclose(block_centres(image_io.to_rgb(image)) * 255, BLOCK_COLOURS, atol=0.5)


@pytest.mark.parametrize("mode", ["L", "LA", "La"])
def test_grey_modes_repeat_grey_and_drop_alpha(mode):
    source = Image.fromarray(block_image()).convert("L")
    image = source.convert("LA").convert("La") if mode == "La" else source.convert(mode)
    got = image_io.to_rgb(image)
    assert got.shape == (16, 16, 3) and got.dtype == np.float32
    np.testing.assert_allclose(block_centres(got) * 255, np.repeat(grey(BLOCK_COLOURS)[:, None], 3, 1), atol=1)


def test_grey_alpha_png_file_reads_as_grey(tmp_path):
    Image.fromarray(block_image()).convert("LA").save(tmp_path / "la.png")
    got = image_io.read_image(tmp_path / "la.png")
    assert got.shape == (16, 16, 3)
    np.testing.assert_allclose(block_centres(got)[:, 0] * 255, grey(BLOCK_COLOURS), atol=1)


def test_one_bit_images_are_black_and_white(tmp_path):
    bits = np.zeros((16, 16), dtype=bool)
    bits[:, 8:] = True
    Image.fromarray(bits).save(tmp_path / "bits.png")
    with Image.open(tmp_path / "bits.png") as stored:
        assert stored.mode == "1"
    got = image_io.read_image(tmp_path / "bits.png")
    np.testing.assert_array_equal(got[:, :8], 0.0)
    np.testing.assert_array_equal(got[:, 8:], 1.0)


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_samples_span_their_range(tmp_path, mode):
    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16)
    if mode == "I;16":
        Image.fromarray(ramp.astype(np.uint16)).save(tmp_path / "deep.png")
        with Image.open(tmp_path / "deep.png") as stored:
            image = stored.copy()
    else:
        image = Image.fromarray(ramp.astype(np.int32), "I")
    assert image.mode == mode
    got = image_io.to_rgb(image)
    np.testing.assert_allclose(got[..., 1], ramp / 65535, atol=1e-4)


def test_float_samples_span_zero_to_one_and_nan_is_an_error(tmp_path):
    values = np.linspace(-0.5, 1.5, 16 * 16, dtype=np.float32).reshape(16, 16)
    Image.fromarray(values, "F").save(tmp_path / "float.tif")
    got = image_io.read_image(tmp_path / "float.tif")
    np.testing.assert_allclose(got[..., 2], np.clip(values, 0, 1), atol=1e-6)
    values[3, 3] = np.nan
    Image.fromarray(values, "F").save(tmp_path / "nan.tif")
    with pytest.raises(Exception, match="nan.tif: image has NaN or infinite samples"):
        image_io.read_image(tmp_path / "nan.tif")


@pytest.mark.parametrize("orientation,upright", [(3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)),
                                                 (8, lambda a: np.rot90(a, 1))])
def test_exif_orientation_is_applied_to_size_pixels_and_masks(tmp_path, orientation, upright):
    stored = block_image()[:, :12]  # 12x16: not square, so a rotation shows in the size
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "rotated.png", exif=exif)
    expected = upright(stored)
    assert image_io.probe_image(tmp_path / "rotated.png") == (expected.shape[1], expected.shape[0])
    assert image_io.header_size(tmp_path / "rotated.png") == (expected.shape[1], expected.shape[0])
    np.testing.assert_allclose(image_io.read_image(tmp_path / "rotated.png") * 255, expected, atol=0.5)
    np.testing.assert_array_equal(image_io.read_mask(tmp_path / "rotated.png"), expected.max(axis=2) > 127)
    assert not image_io.stored_upright_rgb(tmp_path / "rotated.png")


def test_palette_and_grey_alpha_masks_mean_their_grey(tmp_path):
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(np.stack([np.zeros_like(mask), np.full_like(mask, 255)], -1), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(image_io.read_mask(tmp_path / "palette.png"), mask > 0)
    assert not image_io.read_mask(tmp_path / "la.png").any()  # black, opaque: the alpha is not the mask


@pytest.mark.parametrize("mode", ["P", "LA"])
def test_palette_and_grey_alpha_photos_run_through_init_with_their_colours(scene, tmp_path, capsys, mode):
    truth = {}
    for path in (scene / "images").iterdir():
        truth[path.stem] = image_io.downsample(image_io.read_image(path), 2)
        with Image.open(path) as image:
            converted = image.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else image.convert(mode)
        converted.save(path)
    assert run("run", scene, "--views", 3, "--downscale", 2, "--out", tmp_path / "out", "--until", "init",
               "--set", "init.points=200") == 0
    graph = SceneStore(tmp_path / "out" / "tiny").load()
    for view in graph.views():
        written = image_io.read_image(graph.resolve(view.image))  # down-sampled on import
        expected = truth[view.name]
        if mode == "LA":
            expected = np.repeat((grey(expected * 255) / 255)[..., None], 3, axis=2)
        assert np.abs(written - expected).mean() < 0.01


# --- the output folder's lock -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "12", "garbage here\n", "0 HOST\n", "99999999999999999999 HOST\n", "\x00\x01"])
def test_unreadable_or_dead_lock_is_stale(scene, tmp_path, capsys, text):
    out = tmp_path / "out" / "tiny"
    out.mkdir(parents=True)
    (out / LOCK_FILE).write_text(text.replace("HOST", socket.gethostname()))
    assert run("run", scene, "--views", 3, "--out", tmp_path / "out", "--until", "views") == 0
    assert entries(out) == ["config.yaml", "metrics.json", "scene.json"]


def test_live_lock_still_holds(scene, tmp_path, capsys):
    out = tmp_path / "out" / "tiny"
    out.mkdir(parents=True)
    (out / LOCK_FILE).write_text(f"{os.getppid()} {socket.gethostname()}\n")
    expect_error(capsys, ["run", scene, "--out", tmp_path / "out"], f"held by another run (pid {os.getppid()})", out)
    assert entries(out) == [LOCK_FILE]


# --- --until after a config change: nothing made from what was redone survives -------------------------------

FAST = ("--set", "optimize.cpu_steps=2", "optimize.cpu_points=100", "init.points=100", "mesh.cpu_resolution=16",
        "mesh.extra_views=2")


def test_until_after_a_config_change_removes_later_results(scene, tmp_path, capsys):
    out, folder = tmp_path / "out", tmp_path / "out" / "tiny"
    assert run("run", scene, "--views", 4, "--out", out, *FAST) == 0
    assert {"assets/mesh.ply", "assets/splats.ply", "assets/points_init.ply",
            "assets/optimize/loss.json"} <= set(entries(folder))
    assert any(e.startswith("assets/renders/") for e in entries(folder))
    assert run("run", scene, "--views", 4, "--out", out, "--until", "views",
               *FAST) == 0  # same settings: all still valid
    assert list(SceneStore(folder).load().stages) == ["views", "poses", "init", "optimize", "prior", "mesh"]

    assert run("run", scene, "--views", 3, "--out", out, "--until", "views", *FAST) == 0
    graph = SceneStore(folder).load()
    assert list(graph.stages) == ["views"]
    assert graph.splats() is None and "mesh/final" not in graph.nodes and "points/init" not in graph.nodes
    assert entries(folder) == ["assets", "config.yaml", "metrics.json", "scene.json"]
    assert list(json.loads((folder / "metrics.json").read_text())["stages"]) == ["views"]
    capsys.readouterr()
    expect_error(capsys, ["export", folder, "--format", "ply"], "the scene has no mesh")


def test_a_pending_point_cloud_never_takes_another_nodes_file(tmp_path):
    from recon.scene.graph import PointCloud, Provenance, SceneGraph

    store = SceneStore(tmp_path / "scene")
    graph = SceneGraph(name="scene")
    given = np.zeros((3, 3))
    graph.add(PointCloud(id="points/sfm", path=None, count=3, points=given, colors=given))
    store.save(graph)
    graph.nodes["points/sfm_given"] = graph.nodes.pop("points/sfm")  # set aside, as the poses stage does
    graph.nodes["points/sfm_given"].id = "points/sfm_given"
    graph.add(PointCloud(id="points/sfm", path=None, count=3, points=given + 1, colors=given,
                         provenance=Provenance("poses")))
    store.save(graph)
    assert graph.nodes["points/sfm_given"].path == "assets/points_sfm.ply"
    assert graph.nodes["points/sfm"].path == "assets/points_sfm-1.ply"
    from recon.io.ply import read_points

    assert read_points(store.root / "assets/points_sfm.ply")[0].max() == 0


# --- COLMAP models are checked before pycolmap reads them ------------------------------------------------------


def tiny_colmap(root: Path, binary: bool = False, count: int = 4, width: int = 24, height: int = 18) -> Path:
    """A COLMAP text model in sparse/0 (one PINHOLE camera, ``count`` ring images, 3 points seen by the first two
    images), converted to binary by pycolmap (with its rigs and frames) when ``binary``; photos in images/."""
    model = root / "sparse" / "0"
    model.mkdir(parents=True)
    (root / "images").mkdir()
    cameras = ring_cameras(count, width, height)
    K = cameras[0][0]
    (model / "cameras.txt").write_text(f"1 PINHOLE {width} {height} {K[0, 0]} {K[1, 1]} {K[0, 2]} {K[1, 2]}\n")
    lines = []
    for i, (_, w2c) in enumerate(cameras):
        Image.fromarray(photo(i, width, height)).save(root / "images" / f"{i:03d}.png")
        q, t = quaternion_from_rotation(w2c[:3, :3]), w2c[:3, 3]
        observed = " ".join(f"{5.0 + k} {6.0 + k} {k + 1}" for k in range(3)) if i < 2 else ""
        lines += [f"{i + 1} {' '.join(map(repr, q.tolist() + t.tolist()))} 1 {i:03d}.png", observed]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    (model / "points3D.txt").write_text("".join(f"{k + 1} 0.{k} 0.1 0.2 200 100 50 0.5 1 {k} 2 {k}\n"
                                                for k in range(3)))
    if binary:
        to_binary(model)
    return root


@pytest.mark.parametrize("binary", [False, True])
def test_tiny_colmap_models_import(tmp_path, binary):
    from recon.io import import_scene

    graph = import_scene(tiny_colmap(tmp_path / "c", binary=binary))
    assert len(graph.views()) == 4 and graph.nodes["points/sfm"].count == 3


@pytest.mark.parametrize("damage,message", [
    (lambda m: (m / "points3D.bin").write_bytes(b""), "points3D.bin: file ends inside header (byte 0 of 0)"),
    (lambda m: (m / "points3D.bin").write_bytes((10**12).to_bytes(8, "little")),
     "points3D.bin: header says 1000000000000 3D points, more than its 8 bytes can hold"),
    (lambda m: (m / "images.bin").write_bytes((m / "images.bin").read_bytes()[:-5]), "images.bin: file ends inside"),
    (lambda m: (m / "frames.bin").unlink(), "rigs.bin: a model with rigs.bin needs frames.bin too"),
    (lambda m: (m / "cameras.bin").write_bytes((m / "cameras.bin").read_bytes() + b"\0"),
     "1 bytes after the last record"),
])
def test_damaged_binary_model_is_one_line_naming_the_file(tmp_path, capsys, damage, message):
    root = tiny_colmap(tmp_path / "c", binary=True)
    damage(root / "sparse" / "0")
    expect_error(capsys, ["run", root, "--out", tmp_path / "out"], message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("file,old,new,message", [
    ("images.txt", " 1 000.png", " 9 000.png", "image 1 (000.png): camera 9 is not in cameras.txt"),
    ("points3D.txt", " 0.5 1 0 ", " 0.5 7 0 ", "3D point 1: its track names image 7, which is not in images.txt"),
    ("points3D.txt", "1 0 2 0\n", "1 0 2 5\n", "its track names 2D point 5 of image 2 (001.png), which does not name"),
    ("images.txt", "7.0 8.0 3\n", "7.0 8.0 3 9.0 9.0 2\n",
     "image 1 (000.png): 2D point 3 names 3D point 2, whose track in points3D.txt does not hold it"),
    ("cameras.txt", "PINHOLE", "OPENCV_FISHEYE", "camera 1: camera model OPENCV_FISHEYE is not supported"),
    ("cameras.txt", "1 PINHOLE 24 18", "1 PINHOLE 24  18", "line 1: fields must be separated by single spaces"),
    ("images.txt", "1 000.png", "1 my photo.png", "unexpected field 'photo.png' after the last one"),
])
def test_inconsistent_text_model_is_one_line_naming_the_line(tmp_path, capsys, file, old, new, message):
    root = tiny_colmap(tmp_path / "c")
    path = root / "sparse" / "0" / file
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    line = expect_error(capsys, ["run", root, "--out", tmp_path / "out"], message)
    assert str(path) in line


# --- transforms.json of the wrong types, or values no camera has ---------------------------------------------


def edit_transforms(scene: Path, edit) -> None:
    meta = json.loads((scene / "transforms.json").read_text())
    edit(meta)
    (scene / "transforms.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["frames"][2].update(fl_x="800"), "frame 2: fl_x must be a number, got a string"),
    (lambda m: m["frames"][1].update(cx=float("nan")), "frame 1: cx must be a number, got nan"),
    (lambda m: m.update(w="24"), "transforms.json: w must be a number, got a string"),
    (lambda m: m.update(h=17.5), "h must be a positive whole number of pixels, got 17.5"),
    (lambda m: m.update(k1=None), "transforms.json: k1 must be a number, got null"),
    (lambda m: m["frames"][0].update(transform_matrix=[[1, 0, 0, 0], [0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
     "frame 0: transform_matrix must be 4 rows (or 3) of 4 numbers"),
    (lambda m: m["frames"][0]["transform_matrix"][1].__setitem__(2, "0"), "frame 0: transform_matrix must be a number"),
    (lambda m: m["frames"][3].update(file_path=7), "frame 3: file_path must be a string, got 7"),
    (lambda m: m["frames"][3].update(file_path="a\u0000b.png"), "frame 3: 'a\\x00b.png' is not a usable path"),
    (lambda m: m["frames"].__setitem__(1, ["images/001.png"]), "frame 1 must be a JSON object, got a list"),
    (lambda m: m.update(fl_x=1e-3, fl_y=1e-3), "too short for a 24x18 perspective image"),
    (lambda m: m.update(fl_x=-24.0), "focal lengths must be positive, got fx=-24"),
    (lambda m: m.update(k1=1e6), "distortion (k1=1e+06) is not a lens's"),
    (lambda m: m.update(k1=-5.0), "distortion (k1=-5) is not a lens's: it folds the image"),
    (lambda m: m.update(camera_model=["OPENCV"]), "camera_model must be a string, got a list"),
])
def test_transforms_values_of_the_wrong_type_are_one_line(scene, tmp_path, capsys, edit, message):
    edit_transforms(scene, edit)
    expect_error(capsys, ["run", scene, "--out", tmp_path / "out"], message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content,message", [
    (b"\xff\xfe{}", "transforms.json: not UTF-8 text (byte 0)"),
    (b"[1, 2]", "transforms.json: the top level must be a JSON object, got a list"),
    (b"[" * 100000, "transforms.json: JSON nested too deeply"),
    (b'{"frames": {}}', "transforms.json: no frames"),
])
def test_transforms_file_that_is_not_an_object_is_one_line(scene, tmp_path, capsys, content, message):
    (scene / "transforms.json").write_bytes(content)
    expect_error(capsys, ["run", scene, "--out", tmp_path / "out"], message)


def test_a_lens_with_moderate_distortion_is_accepted(scene, tmp_path, capsys):
    edit_transforms(scene, lambda m: m.update(k1=-0.2, k2=0.05, p1=0.001))
    assert run("run", scene, "--out", tmp_path / "out", "--until", "views") == 0


def test_a_frame_listed_twice_warns_and_is_used_once(scene, tmp_path, capsys):
    edit_transforms(scene, lambda m: m["frames"].append(dict(m["frames"][1])))
    assert run("run", scene, "--out", tmp_path / "out", "--until", "views") == 0
    err = capsys.readouterr().err
    assert "recon: warning:" in err and "frame 5: images/001.png is frame 1's image too (skipped" in err
    assert len(SceneStore(tmp_path / "out" / "tiny").load().views()) == 5
    expect_error(capsys, ["run", scene, "--strict", "--out", tmp_path / "strict"],
                 "frame 5: images/001.png is frame 1's")


def test_views_of_one_name_in_two_folders_keep_apart(scene, tmp_path, capsys):
    (scene / "other").mkdir()
    Image.fromarray(photo(9, 24, 18)).save(scene / "other" / "001.png")
    edit_transforms(scene, lambda m: m["frames"].append(dict(m["frames"][1], file_path="other/001.png")))
    assert run("run", scene, "--downscale", 2, "--out", tmp_path / "out", "--until", "views") == 0
    graph = SceneStore(tmp_path / "out" / "tiny").load()
    assert sorted(v.name for v in graph.views()) == ["000", "001", "001-5", "002", "003", "004"]
    assert len({v.image for v in graph.views()}) == 6


# --- outputs that cannot be written ----------------------------------------------------------------------------


@pytest.fixture
def finished(scene, tmp_path, capsys) -> Path:
    """``scene`` run up to the views stage into tmp_path/out/tiny."""
    assert run("run", scene, "--views", 3, "--out", tmp_path / "out", "--until", "views") == 0
    capsys.readouterr()
    return tmp_path / "out" / "tiny"


def test_out_that_is_a_file_is_one_line(scene, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    expect_error(capsys, ["run", scene, "--out", tmp_path / "taken"],
                 "cannot be made, " + str(tmp_path / "taken") + " is a file")
    expect_error(capsys, ["run", scene, "--out", tmp_path / "taken" / "deeper"], "is a file")
    assert (tmp_path / "taken").read_text() == "a file"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc on this system")
def test_out_in_proc_is_one_line(scene, capsys):
    expect_error(capsys, ["run", scene, "--out", "/proc/recon-out"], "/proc/recon-out/tiny: cannot write")


def test_out_without_permission_is_one_line(scene, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop root")
    (tmp_path / "locked").mkdir(mode=0o555)
    expect_error(capsys, ["run", scene, "--out", tmp_path / "locked"], "Permission denied")
    assert entries(tmp_path / "locked") == []


@pytest.mark.parametrize("argv,message", [
    (["--format", "ply", "--to", "m.obj"],
     "--to m.obj: --format ply writes a .ply file; the name and the format must agree"),
    (["--format", "transforms", "--to", "poses.txt"], "--format transforms writes a .json file"),
    (["--format", "glb", "--to", "{tmp}"], "is a folder; give a file name ending in .glb"),
    (["--format", "colmap", "--to", "{tmp}/file.txt"], "is a file; --format colmap writes a folder"),
    (["--format", "transforms", "--to", "{tmp}/file.txt/t.json"], "file.txt: is a file where a folder must be"),
])
def test_export_to_a_place_that_cannot_take_it_is_one_line(finished, tmp_path, capsys, argv, message):
    (tmp_path / "file.txt").write_text("kept")
    expect_error(capsys, ["export", finished, *[a.format(tmp=tmp_path) for a in argv]], message)
    assert (tmp_path / "file.txt").read_text() == "kept" and not Path("m.obj").exists()


def test_long_file_names_survive_downscale(tmp_path, capsys):
    photos = tmp_path / "long" / "images"
    photos.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(photo(i, 24, 18)).save(photos / (f"{i}" + "x" * 250 + ".png"))  # 255 bytes
    assert run("run", photos.parent, "--downscale", 2, "--out", tmp_path / "out", "--until", "views") == 0
    written = entries(tmp_path / "out" / "long" / "assets" / "images")
    assert len(written) == 3 and all(len(name) == 255 for name in written)


def test_temporary_names_fit_in_a_file_name():
    from recon.files import NAME_MAX, _temporary_name

    for name in ["a.png", "é" * 125 + ".png", "x" * 255, "y." + "z" * 252]:
        tmp = _temporary_name(Path(name))
        assert len(tmp.encode()) <= NAME_MAX and tmp.startswith(".tmp-")
    assert _temporary_name(Path("x" * 251 + ".png")).endswith(".png")


# --- small, read-only and full file systems (mounted in a user namespace of their own) -------------------------

# Runs recon commands in one process and prints, as JSON, each one's exit status and stderr (or its traceback),
# then what is under each folder asked about: the mounts exist only inside the namespace.
DRIVER = """
import contextlib, io, json, os, sys, traceback
from recon.cli import main
cases, folders = json.loads(sys.argv[1])
results = []
for argv in cases:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except BaseException:
            code, err = "traceback", io.StringIO(traceback.format_exc())
    results.append({"code": code, "err": err.getvalue()})
listing = {f: sorted(os.path.relpath(os.path.join(d, n), f) for d, _, ns in os.walk(f) for n in ns) for f in folders}
print(json.dumps({"results": results, "listing": listing}))
"""


def namespace_reason() -> str | None:
    """Why file systems cannot be mounted here (None when they can)."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=16k tmpfs /mnt"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()}"


def in_namespace(mounts: str, cases: list[list], folders: list[Path]) -> dict:
    """Mount (``mounts``: shell commands), then run ``cases`` (recon argument lists) with :data:`DRIVER`."""
    import subprocess
    import sys

    reason = namespace_reason()
    if reason is not None:
        pytest.skip(reason)
    payload = json.dumps([[[str(a) for a in argv] for argv in cases], [str(f) for f in folders]])
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           f'{mounts} && exec "$0" -c "$1" "$2"', sys.executable, DRIVER, payload],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_error_line(result: dict) -> str:
    """The one ``recon: error:`` line of an exit-2 result (warnings may come before it)."""
    lines = [line for line in result["err"].splitlines() if line.strip()]
    assert result["code"] == 2, result
    assert lines[-1].startswith("recon: error: "), lines
    assert all(line.startswith("recon: warning:") for line in lines[:-1]), lines
    return lines[-1]


@pytest.fixture(scope="module")
def hostile_file_systems(tmp_path_factory) -> tuple[Path, dict]:
    """One namespace, three file systems: ``ro`` (read-only), ``small`` (600 KB: the scene fits, the optimize
    stage's checkpoint does not) and ``tiny`` (16 KB: not even the first scene.json fits); the results of
    running recon into each, and of exporting into ``ro``."""
    root = tmp_path_factory.mktemp("file-systems")
    scene = tiny_transforms(root / "tiny")
    assert run("run", scene, "--out", root / "done", "--until", "views") == 0
    ro, small, tiny = root / "ro", root / "small", root / "tiny-disk"
    for folder in (ro, small, tiny):
        folder.mkdir()
    heavy = ["--set", "init.points=3000", "optimize.cpu_points=3000", "optimize.cpu_steps=2"]
    got = in_namespace(f"mount -t tmpfs tmpfs {ro} && mkdir {ro / 'out'} && mount -o remount,ro {ro} && "
                       f"mount -t tmpfs -o size=600k tmpfs {small} && mount -t tmpfs -o size=16k tmpfs {tiny}",
                       [["run", scene, "--out", ro / "out", "--until", "views"],
                        ["export", root / "done" / "tiny", "--to", ro / "t.json"],
                        ["run", scene, "--out", small, "--until", "optimize", *heavy],
                        ["run", scene, "--downscale", 2, "--out", tiny, "--until", "views"]], [ro, small, tiny])
    return root, got


def test_read_only_file_system_is_one_line(hostile_file_systems):
    root, got = hostile_file_systems
    assert "Read-only file system" in one_error_line(got["results"][0])
    expected = f"recon: error: {root / 'ro' / 't.json'}: cannot write (Read-only file system)"
    assert one_error_line(got["results"][1]) == expected
    assert got["listing"][str(root / "ro")] == []  # no file: only the folder made before it was read-only


def test_full_disk_is_one_line_and_keeps_the_last_good_scene(hostile_file_systems):
    root, got = hostile_file_systems
    checkpoint = root / "small" / "tiny" / "assets" / "optimize" / "checkpoint.pt"
    assert one_error_line(got["results"][2]) == f"recon: error: no space left on device writing {checkpoint}"
    kept = got["listing"][str(root / "small")]
    assert "tiny/scene.json" in kept and not any(".tmp-" in name for name in kept)


def test_full_disk_before_the_first_scene_leaves_no_folder(hostile_file_systems):
    root, got = hostile_file_systems
    assert one_error_line(got["results"][3]).startswith("recon: error: no space left on device writing ")
    assert got["listing"][str(root / "tiny-disk")] == []


# --- the viewer: never waits forever, says where it listens, hears Ctrl-C while it starts ---------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv,message", [
    (["--port", 70000], "recon: error: --port 70000: a port is a number from 1 to 65535"),
    (["--port", 0], "recon: error: --port 0: a port is a number from 1 to 65535"),
    (["--host", "192.0.2.1"], "cannot listen there (Cannot assign requested address)"),  # TEST-NET-1: no machine's
])
def test_view_that_cannot_listen_is_one_line(finished, capsys, argv, message):
    assert run("view", finished, *argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert message in lines[-1] and all(line.startswith("recon: warning:") for line in lines[:-1])


def test_run_with_a_viewer_that_cannot_listen_writes_nothing(scene, tmp_path, capsys):
    expect_error(capsys, ["run", scene, "--view", "--port", 70000, "--out", tmp_path / "out"], "--port 70000")
    assert not (tmp_path / "out").exists()


def test_busy_port_moves_to_the_next_and_says_so(finished):
    from viewer.app import ViewerApp

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.warns(UserWarning, match=rf"port {port} is in use; the viewer listens on \d+"):
            app = ViewerApp(finished, port=port, device="cpu")
        try:
            assert app.server.get_port() != port
        finally:
            app.stop()


def test_ctrl_c_while_the_viewer_starts_stops_it_and_exits_130(finished, capsys, monkeypatch):
    import signal

    from viewer.app import ViewerApp

    started = []
    start_polling = ViewerApp.start_polling

    def interrupted(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C halfway through the start
        start_polling(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(ViewerApp, "start_polling", interrupted)
    assert run("view", finished, "--port", free_port()) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "recon: interrupted"
    assert started and started[0]._stop.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- every stage's needs are checked before the first one writes -------------------------------------------------


def test_one_photo_is_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "one" / "images").mkdir(parents=True)
    Image.fromarray(photo(0, 24, 18)).save(tmp_path / "one" / "images" / "a.png")
    expect_error(capsys, ["run", tmp_path / "one", "--out", tmp_path / "out"],
                 "pose estimation needs at least 2 training views, got 1")
    assert not (tmp_path / "out").exists()


def test_calibrated_views_of_two_sizes_train_as_one_batch(scene, tmp_path):
    Image.fromarray(photo(2, 32, 24)).save(scene / "images" / "002.png")
    edit_transforms(scene, lambda m: m["frames"][2].update(w=32, h=24, fl_x=32.0, fl_y=32.0, cx=16.0, cy=12.0))
    assert run("run", scene, "--out", tmp_path / "out", "--until", "optimize", "--set", "init.points=100",
               "optimize.cpu_steps=5") == 0
    scene_file = json.loads((tmp_path / "out" / scene.name / "scene.json").read_text())
    assert [s["name"] for s in scene_file["stages"]] == ["views", "poses", "init", "optimize"]


@pytest.mark.parametrize("argv,message", [
    (["--downscale", 1000], "--downscale 1000: "),
    (["--set", "optimize.cpu_max_width=8"],
     "training images of 24x18 are trained at 8x6; the optimize stage needs at least 11"),
])
def test_images_too_small_for_a_stage_are_refused_before_writing(scene, tmp_path, capsys, argv, message):
    expect_error(capsys, ["run", scene, *argv, "--out", tmp_path / "out"], message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("checkpoint,message", [(False, "the prior stage needs diffusers (pip install diffusers)"),
                                                (True, "prior.checkpoint needs diffusers")])
def test_prior_without_diffusers_is_refused_before_writing(scene, tmp_path, capsys, monkeypatch, checkpoint, message):
    import sys

    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if it were not installed
    settings = ["prior.enabled=true"]
    if checkpoint:
        (tmp_path / "pipeline").mkdir()
        (tmp_path / "pipeline" / "model_index.json").write_text("{}")
        settings.append(f"prior.checkpoint={tmp_path / 'pipeline'}")
    expect_error(capsys, ["run", scene, "--out", tmp_path / "out", "--set", *settings], message)
    assert not (tmp_path / "out").exists()


# --- every count and rate has a range ------------------------------------------------------------------------------


def numeric_settings() -> dict[str, object]:
    """Every int or float setting of the run config, by dotted name, with its default."""
    from dataclasses import fields, is_dataclass
    from typing import get_type_hints

    from recon.config import RunConfig

    out: dict[str, object] = {}

    def walk(obj, prefix: str) -> None:
        hints = get_type_hints(type(obj))
        for f in fields(obj):
            value = getattr(obj, f.name)
            if is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            elif "int" in str(hints[f.name]) or "float" in str(hints[f.name]):
                out[prefix + f.name] = value

    walk(RunConfig(), "")
    return out


def test_every_numeric_setting_has_a_range_its_default_is_in():
    from recon.config import LIMITS

    settings = numeric_settings()
    assert set(settings) - {"prior.channels"} == set(LIMITS)  # channels: checked by the prior stage (multiples of 8)
    for key, default in settings.items():
        assert key == "prior.channels" or default is None or LIMITS[key].admits(default), key


@pytest.mark.parametrize("argv,message", [
    (["--set", "optimize.cpu_steps=-5"], "command line: optimize.cpu_steps = -5 must be at least 1"),
    (["--set", "init.points=0"], "init.points = 0 must be at least 1"),
    (["--set", "optimize.ssim_weight=2"], "optimize.ssim_weight = 2.0 must be at least 0 and at most 1"),
    (["--set", "optimize.lr_means=.nan"], "optimize.lr_means = nan must be at least 0"),
    (["--set", "optimize.init_opacity=1"], "must be above 0 and below 1"),
    (["--set", "prior.strength=0"], "prior.strength = 0.0 must be above 0 and at most 1"),
    (["--set", "mesh.resolution=1"], "mesh.resolution = 1 must be at least 2"),
    (["--set", "seed=-1"], "seed = -1 must be at least 0"),
    (["--views", 0], "views.count = 0 must be at least 1"),
    (["--downscale", 0], "data.downscale = 0 must be at least 1"),
    (["--view", "--view-every", -1], "live_every = -1 must be at least 0"),
    (["--view", "--set", "live_every=-1"], "live_every = -1 must be at least 0"),  # --view alone leaves --set's
    (["--port", 8081], "--port: for the live viewer, which only --view starts"),
    (["--view-every", 50, "--host", "0.0.0.0"], "--view-every, --host: for the live viewer, which only --view starts"),
])
def test_out_of_range_settings_are_one_line(scene, tmp_path, capsys, argv, message):
    expect_error(capsys, ["run", scene, *argv, "--out", tmp_path / "out"], message)
    assert not (tmp_path / "out").exists()


def test_out_of_range_preset_value_names_the_preset(scene, tmp_path, capsys):
    preset = tmp_path / "mine.yaml"
    preset.write_text("base: fast\noptimize:\n  steps: 0\n")
    expect_error(capsys, ["run", scene, "--config", preset, "--out", tmp_path / "out"],
                 f"{preset}: optimize.steps = 0 must be at least 1")


# --- a seeded fuzz of the importers: exit 0, or exit 2 with one line; never a traceback or a partial folder ------

HOSTILE_VALUES = [None, True, False, "", "abc", "800", "images/000.png", "../../..", "a\u0000b", "x" * 300, -1, 0,
                  1e-9, -0.0, 1e308, 2**70, float("nan"), float("inf"), float("-inf"), [], {}, [1, 2],
                  [[1, 2], [3]], [[0.0] * 4] * 4, {"a": 1}]
HOSTILE_TOKENS = ["", "-1", "0", "99", "4294967296", "18446744073709551616", "nan", "inf", "1e999", "abc", "+1",
                  "0x10", "\uff11", "1.5", "-5", "PINHOLE", "CAMERA", "x" * 300]


@dataclass
class Fuzzer:
    """A layout's fuzz: ``build(folder)`` writes a valid scene into the folder and returns the scene's path (the
    folder or one inside it); each mutation damages a copy of the folder and says how."""

    build: Callable[[Path], Path]
    mutations: list[Callable[[Path, np.random.Generator], str]]
    cases: int


def fuzz_outcome(capsys, scene: Path, out: Path) -> str | None:
    """None when ``recon run`` on ``scene`` exits 0 with a readable scene or 2 with one line and no folder;
    otherwise what went wrong."""
    import traceback

    try:
        code = run("run", scene, "--out", out, "--until", "views")
    except BaseException:  # noqa: BLE001 - whatever escapes is the finding
        capsys.readouterr()
        return "traceback: " + traceback.format_exc().strip().splitlines()[-1]
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("recon: error: ")]
    if code == 0:
        try:
            SceneStore(out / scene.name).load()
        except Exception as exc:  # noqa: BLE001
            return f"exit 0 but the scene does not load ({exc})"
        return None if not errors else f"exit 0 with {errors}"
    if code != 2:
        return f"exit {code}: {lines[-3:]}"
    if len(errors) != 1 or errors[0] != lines[-1] or "Traceback" in "\n".join(lines):
        return f"exit 2 but not one line: {lines[-3:]}"
    return None if not entries(out) else f"exit 2 but left {entries(out)[:3]}"


def run_fuzz(capsys, tmp_path: Path, fuzzer: Fuzzer, seed: int) -> tuple[int, list[str]]:
    """(cases that exited 0, findings) over ``fuzzer.cases`` damaged copies of one built scene."""
    import shutil

    base = tmp_path / "base"
    inside = fuzzer.build(base).relative_to(base)
    capsys.readouterr()
    accepted, findings = 0, []
    for case in range(fuzzer.cases):
        rng = np.random.default_rng([seed, case])
        folder = tmp_path / f"case{case}" / "scene"
        shutil.copytree(base, folder)
        scene = folder / inside
        done = [fuzzer.mutations[int(rng.integers(len(fuzzer.mutations)))](folder, rng)
                for _ in range(int(rng.integers(1, 3)))]
        problem = fuzz_outcome(capsys, scene, tmp_path / f"case{case}" / "out")
        if problem is None:
            accepted += int((tmp_path / f"case{case}" / "out").exists())
        else:
            findings.append(f"case {case} ({'; '.join(done)}): {problem}")
        shutil.rmtree(tmp_path / f"case{case}")
    return accepted, findings


def _hostile(rng: np.random.Generator):
    return HOSTILE_VALUES[int(rng.integers(len(HOSTILE_VALUES)))]


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def _loaded_json(scene: Path):
    """transforms.json's content, or None once an earlier mutation has damaged it."""
    try:
        return json.loads((scene / "transforms.json").read_text())
    except (OSError, ValueError):
        return None


def _edit_json_file(scene: Path, rng: np.random.Generator) -> str:
    """Replace, delete or add a value somewhere in transforms.json."""
    meta = _loaded_json(scene)
    if not isinstance(meta, dict):
        return "transforms.json already damaged"
    holders: list[tuple[object, object]] = []

    def walk(node) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, value in items:
            holders.append((node, key))
            walk(value)

    walk(meta)
    node, key = _pick(rng, holders)
    action = int(rng.integers(3))
    if action == 0:
        node[key] = value = _hostile(rng)
        what = f"{key!r} = {value!r}"[:80]
    elif action == 1 and isinstance(node, dict):
        del node[key]
        what = f"deleted {key!r}"
    else:
        target = node if isinstance(node, dict) else meta
        name = _pick(rng, ["fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "p2", "k4", "camera_angle_x", "camera_model",
                           "mask_path", "ply_file_path", "file_path", "transform_matrix", "frames",
                           "applied_transform"])
        target[name] = value = _hostile(rng)
        what = f"set {name} = {value!r}"[:80]
    (scene / "transforms.json").write_text(json.dumps(meta))
    return what


def _edit_frames(scene: Path, rng: np.random.Generator) -> str:
    """Duplicate, drop, reorder or empty the frames."""
    meta = _loaded_json(scene)
    if not isinstance(meta, dict):
        return "transforms.json already damaged"
    frames = meta["frames"] if isinstance(meta.get("frames"), list) else []
    action = int(rng.integers(4))
    if action == 0 and frames:
        frames.append(dict(_pick(rng, frames)))
    elif action == 1 and frames:
        frames.pop(int(rng.integers(len(frames))))
    elif action == 2:
        rng.shuffle(frames)
    else:
        frames.clear()
    (scene / "transforms.json").write_text(json.dumps(meta))
    return ["duplicated a frame", "dropped a frame", "shuffled frames", "emptied frames"][action]


def _damage_bytes(path: Path, rng: np.random.Generator) -> str:
    """Truncate, flip bytes of, append to, empty or delete one file."""
    data = bytearray(path.read_bytes())
    action = int(rng.integers(5))
    if action == 0:
        cut = int(rng.integers(len(data) + 1))
        path.write_bytes(bytes(data[:cut]))
        return f"{path.name} cut at {cut}"
    if action == 1 and data:
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        path.write_bytes(bytes(data))
        return f"{path.name} bytes flipped"
    if action == 2:
        path.write_bytes(bytes(data) + rng.bytes(int(rng.integers(1, 64))))
        return f"{path.name} extended"
    if action == 3:
        path.write_bytes(b"")
        return f"{path.name} emptied"
    path.unlink()
    return f"{path.name} deleted"


def _damage_a_file(pattern: str):
    def damage(scene: Path, rng: np.random.Generator) -> str:
        files = sorted(p for p in scene.rglob(pattern) if p.is_file())
        return _damage_bytes(_pick(rng, files), rng) if files else f"no {pattern}"

    return damage


def _damage_a_photo(scene: Path, rng: np.random.Generator) -> str:
    photos = sorted(p for p in scene.rglob("*.png") if p.is_file())
    if not photos:
        return "no photos"
    path = _pick(rng, photos)
    if rng.integers(2):
        Image.fromarray(photo(99, int(rng.integers(1, 40)), int(rng.integers(1, 40)))).save(path)
        return f"{path.name} resized"
    return _damage_bytes(path, rng)


def _edit_text_model(scene: Path, rng: np.random.Generator) -> str:
    """Change a token, drop or duplicate a line, or add garbage, in one COLMAP text file."""
    files = sorted((scene / "sparse" / "0").glob("*.txt"))
    if not files:
        return "no text files"
    path = _pick(rng, files)
    lines = path.read_bytes().decode("utf-8", "surrogateescape").split("\n")
    row = int(rng.integers(len(lines)))
    tokens = lines[row].split(" ")
    action = int(rng.integers(5))
    if action == 0:
        tokens[int(rng.integers(len(tokens)))] = _pick(rng, HOSTILE_TOKENS)
        lines[row] = " ".join(tokens)
    elif action == 1:
        del tokens[int(rng.integers(len(tokens)))]
        lines[row] = " ".join(tokens)
    elif action == 2:
        lines.pop(row)
    elif action == 3:
        lines.insert(row, lines[row])
    else:
        lines.insert(row, " ".join(_pick(rng, HOSTILE_TOKENS) for _ in range(int(rng.integers(1, 8)))))
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape"))
    return f"{path.name} line {row}: edit {action}"


def _edit_binary_count(scene: Path, rng: np.random.Generator) -> str:
    """Overwrite the record count at the head of one COLMAP binary file."""
    files = sorted((scene / "sparse" / "0").glob("*.bin"))
    if not files:
        return "no binary files"
    path = _pick(rng, files)
    data = bytearray(path.read_bytes())
    count = _pick(rng, [0, 1, 2, 7, 2**32, 2**63, 2**64 - 1, int(rng.integers(2**62))])
    data[:8] = count.to_bytes(8, "little")
    path.write_bytes(bytes(data))
    return f"{path.name} count {count}"


def tiny_idr(root: Path, count: int = 4, width: int = 24, height: int = 18) -> Path:
    """A DTU/IDR scan: image/, mask/, cameras.npz (world_mat_i = K [R | t], scale_mat_i the identity)."""
    from recon.scene.camera import compose_projection

    (root / "image").mkdir(parents=True)
    (root / "mask").mkdir()
    mats = {}
    for i, (K, w2c) in enumerate(ring_cameras(count, width, height)):
        Image.fromarray(photo(i, width, height)).save(root / "image" / f"{i:06d}.png")
        Image.fromarray(np.full((height, width), 255, np.uint8)).save(root / "mask" / f"{i:03d}.png")
        P = np.eye(4)
        P[:3] = compose_projection(K, w2c)
        mats[f"world_mat_{i}"], mats[f"scale_mat_{i}"] = P, np.eye(4)
    np.savez(root / "cameras.npz", **mats)
    return root


def _edit_npz(scene: Path, rng: np.random.Generator) -> str:
    """Replace, drop or reshape one array of cameras.npz."""
    try:
        with np.load(scene / "cameras.npz") as npz:
            mats = dict(npz)
    except Exception:  # noqa: BLE001 - an earlier mutation damaged it
        return "cameras.npz already damaged"
    if not mats:
        return "cameras.npz empty"
    key = _pick(rng, sorted(mats))
    action = int(rng.integers(4))
    if action == 0:
        del mats[key]
    elif action == 1:
        mats[key] = _pick(rng, [np.full((4, 4), np.nan), np.zeros((4, 4)), np.eye(3), np.zeros(0), np.array("text"),
                                np.eye(4)[:, :, None], np.eye(4) * 1e308, -np.eye(4)])
    elif action == 2:
        mats[f"world_mat_{int(rng.integers(4, 99))}"] = mats[key]
    else:
        mats[key] = mats[key] + rng.normal(size=mats[key].shape) * 10 ** float(rng.uniform(-6, 3))
    np.savez(scene / "cameras.npz", **mats)
    return f"cameras.npz {key}: edit {action}"


def tiny_rectified(root: Path, count: int = 4, width: int = 24, height: int = 18) -> Path:
    """DTU's own layout: Rectified/scan1/rect_*_3_r5000.png with Calibration/cal18/pos_*.txt; returns the scan."""
    from recon.scene.camera import compose_projection

    scan, calibration = root / "Rectified" / "scan1", root / "Calibration" / "cal18"
    scan.mkdir(parents=True)
    calibration.mkdir(parents=True)
    for i, (K, w2c) in enumerate(ring_cameras(count, width, height)):
        Image.fromarray(photo(i, width, height)).save(scan / f"rect_{i + 1:03d}_3_r5000.png")
        np.savetxt(calibration / f"pos_{i + 1:03d}.txt", compose_projection(K, w2c))
    return scan


def _edit_projection(root: Path, rng: np.random.Generator) -> str:
    """Change, drop or add a number in one pos_*.txt."""
    path = _pick(rng, sorted(root.rglob("pos_*.txt")) or [None])
    if path is None:
        return "no pos_*.txt"
    words = path.read_bytes().decode("utf-8", "replace").split()
    action = int(rng.integers(3))
    if action == 0 and words:
        words[int(rng.integers(len(words)))] = _pick(rng, HOSTILE_TOKENS)
    elif action == 1 and words:
        words.pop(int(rng.integers(len(words))))
    else:
        words.insert(int(rng.integers(len(words) + 1)), _pick(rng, HOSTILE_TOKENS))
    path.write_text(" ".join(words[:4]) + "\n" + " ".join(words[4:8]) + "\n" + " ".join(words[8:]) + "\n")
    return f"{path.name} edit {action}"


def tiny_llff(root: Path, count: int = 4, width: int = 24, height: int = 18) -> Path:
    """An LLFF capture: poses_bounds.npy (camera-to-world columns down, right, back; then H, W, focal; then
    near and far) with images/ and images_2/."""
    from recon.scene.camera import invert_rigid

    (root / "images").mkdir(parents=True)
    (root / "images_2").mkdir()
    rows = []
    for i, (K, w2c) in enumerate(ring_cameras(count, width, height)):
        Image.fromarray(photo(i, width, height)).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(photo(i, width // 2, height // 2)).save(root / "images_2" / f"{i:03d}.png")
        c2w = invert_rigid(w2c)
        pose = np.concatenate([c2w[:3, 1:2], c2w[:3, 0:1], -c2w[:3, 2:3], c2w[:3, 3:4],
                               np.array([[height], [width], [K[0, 0]]])], axis=1)
        rows.append(np.concatenate([pose.ravel(), [1.0, 6.0]]))
    np.save(root / "poses_bounds.npy", np.array(rows))
    return root


def _edit_poses_bounds(scene: Path, rng: np.random.Generator) -> str:
    """Replace poses_bounds.npy with an array of another shape, or with NaN, zero or absurd entries."""
    try:
        poses = np.load(scene / "poses_bounds.npy")
    except Exception:  # noqa: BLE001 - an earlier mutation damaged it
        return "poses_bounds.npy already damaged"
    if poses.ndim != 2 or not poses.size:
        return "poses_bounds.npy already reshaped"
    action = int(rng.integers(5))
    if action == 0:
        poses = poses[:, : int(rng.integers(poses.shape[1]))]
    elif action == 1:
        poses = poses[: int(rng.integers(len(poses)))]
    elif action == 2:
        poses.flat[int(rng.integers(poses.size))] = _pick(rng, [np.nan, np.inf, 0.0, -1.0, 1e308])
    elif action == 3:
        poses = np.concatenate([poses, poses[:1]])
    else:
        poses = poses.reshape(-1)
    np.save(scene / "poses_bounds.npy", poses)
    return f"poses_bounds.npy edit {action}"


FUZZERS = {
    "transforms": Fuzzer(tiny_transforms, [_edit_json_file, _edit_json_file, _edit_frames,
                                           _damage_a_file("transforms.json"), _damage_a_photo], 120),
    "colmap-text": Fuzzer(tiny_colmap, [_edit_text_model, _edit_text_model, _damage_a_file("*.txt"), _damage_a_photo],
                          60),
    "colmap-binary": Fuzzer(lambda root: tiny_colmap(root, binary=True),
                            [_damage_a_file("*.bin"), _edit_binary_count, _damage_a_photo], 60),
    "dtu": Fuzzer(tiny_idr, [_edit_npz, _edit_npz, _damage_a_file("cameras.npz"), _damage_a_file("*.png")], 50),
    "dtu-rectified": Fuzzer(tiny_rectified, [_edit_projection, _edit_projection, _damage_a_file("pos_*.txt"),
                                             _damage_a_photo], 30),
    "llff": Fuzzer(tiny_llff, [_edit_poses_bounds, _edit_poses_bounds, _damage_a_file("poses_bounds.npy"),
                               _damage_a_photo], 60),
}
LLFF_MISSING = importlib.util.find_spec("recon.io.llff") is None


@pytest.mark.parametrize("layout", [pytest.param(name, marks=pytest.mark.skipif(
    name == "llff" and LLFF_MISSING, reason="no LLFF importer (recon/io/llff.py) in this tree")) for name in FUZZERS])
def test_fuzzed_importers_exit_0_or_2_with_one_line(tmp_path, capsys, layout):
    fuzzer = FUZZERS[layout]
    accepted, findings = run_fuzz(capsys, tmp_path, fuzzer, seed=sorted(FUZZERS).index(layout))
    assert not findings, f"{len(findings)} of {fuzzer.cases} cases:\n" + "\n".join(findings[:10])
    assert accepted < fuzzer.cases  # the damage is real: most cases are refused
