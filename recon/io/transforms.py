"""nerfstudio / instant-ngp ``transforms.json``: reader and writer.

Layout: camera-to-world matrices in the OpenGL convention (x right, y up,
z back) per frame; intrinsics ``fl_x fl_y cx cy w h`` at the top level or per
frame, or ``camera_angle_x`` (and ``camera_angle_y``); OpenCV distortion
``k1 k2 k3 p1 p2``; optional ``aabb_scale``, ``applied_transform``,
``ply_file_path``, per-frame ``mask_path``. Frames whose image is missing are
skipped with a warning that names them (an error with ``strict``).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from recon.errors import InputError
from recon.files import write_json
from recon.io import images as image_io
from recon.io import ply
from recon.io.layout import ImportOptions, Layout, new_view
from recon.scene.camera import (
    check_distortion,
    check_intrinsics,
    check_pose,
    focal_from_fov,
    intrinsics_matrix,
    opengl_from_world_to_camera,
    transform_world_to_camera,
    world_to_camera_from_opengl,
)
from recon.scene.graph import Camera, PointCloud, SceneGraph
from recon.scene.names import POINTS_SFM

FILE_NAME = "transforms.json"
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y",
                   "k1", "k2", "k3", "k4", "p1", "p2", "camera_model")
_PERSPECTIVE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")


def _find(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".json":
        return path
    if path.is_dir() and (path / FILE_NAME).is_file():
        return path / FILE_NAME
    return None


def read(path: Path, options: ImportOptions) -> SceneGraph:
    json_path = _find(path)
    assert json_path is not None
    where = str(json_path)
    meta = _load(json_path)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{where}: no frames")
    root = json_path.parent
    graph = SceneGraph(name=root.name, source={"path": str(json_path), "files": [str(json_path)]})
    graph.meta["transforms"] = {k: meta[k] for k in ("aabb_scale", "applied_transform") if k in meta}

    shared = _intrinsic_fields(meta, where)
    missing: list[str] = []
    listed: dict[Path, int] = {}  # image -> the first frame that names it
    sensors: dict[tuple, str] = {}  # identical intrinsics share a sensor
    for i, frame in enumerate(frames):
        fwhere = f"{where}: frame {i}"
        if not isinstance(frame, dict):
            raise InputError(f"{fwhere} must be a JSON object, got {_kind(frame)}")
        if "file_path" not in frame or "transform_matrix" not in frame:
            raise InputError(f"{fwhere}: needs file_path and transform_matrix")
        file_path = _string(frame, "file_path", fwhere)
        matrix = _matrix(frame["transform_matrix"], fwhere)
        image = _image_path(root, file_path, fwhere)
        if image is None:
            missing.append(file_path)
            continue
        if image in listed:
            message = f"{fwhere}: {file_path} is frame {listed[image]}'s image too"
            if options.strict:
                raise InputError(message)
            warnings.warn(message + " (skipped: one photo is one view)", stacklevel=2)
            continue
        listed[image] = i
        intr = {**shared, **_intrinsic_fields(frame, fwhere)}
        K, w, h, dist = _intrinsics(intr, image, fwhere)
        key = (K.tobytes(), w, h, None if dist is None else dist.tobytes())
        sensor = sensors.setdefault(key, str(len(sensors)))
        c2w = check_pose(matrix, f"{fwhere} ({file_path})")
        w2c = world_to_camera_from_opengl(c2w)
        cam = graph.add(Camera(id=f"camera/{i:04d}", K=K, world_to_camera=w2c, width=w, height=h,
                               distortion=dist, sensor=sensor))
        mask = None
        if options.masks and "mask_path" in frame:
            mask_path = _string(frame, "mask_path", fwhere)
            mask = _image_path(root, mask_path, fwhere)
            if mask is None:
                raise InputError(f"{fwhere}: mask {mask_path} is missing")
        graph.add(new_view(i, Path(file_path).stem, image, cam.id, mask))

    if missing:
        listed_names = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        message = f"{where}: {len(missing)} frame(s) name images that do not exist: {listed_names}"
        if options.strict:
            raise InputError(message)
        warnings.warn(message + " (skipped)", stacklevel=2)
        graph.meta["skipped_frames"] = missing

    if "ply_file_path" in meta:
        ply_name = _string(meta, "ply_file_path", where)
        ply_path = root / ply_name
        if not ply_path.is_file():
            raise InputError(f"{where}: ply_file_path {ply_name} does not exist")
        points, colors = ply.read_points(ply_path)
        graph.add(PointCloud(id=POINTS_SFM, path=str(ply_path), count=len(points), kind="sfm"))
        graph.source["files"].append(str(ply_path))
    return graph


def _load(json_path: Path) -> dict[str, Any]:
    """The file's top-level object; one line for anything that is not a JSON object in UTF-8."""
    where = str(json_path)
    try:
        meta = json.loads(json_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply") from None
    if not isinstance(meta, dict):
        raise InputError(f"{where}: the top level must be a JSON object, got {_kind(meta)}")
    return meta


def _kind(value: Any) -> str:
    """How a JSON value is described in errors."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), repr(value))


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise InputError(f"{where}: {key} must be a string, got {_kind(value)}")
    return value


def _number(value: Any, key: str, where: str) -> float:
    """``value`` as a finite float; JSON numbers only (not strings, true/false or null)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # a JSON integer past float's range
            number = math.inf
        if math.isfinite(number):
            return number
    raise InputError(f"{where}: {key} must be a number, got {_kind(value)}")


def _intrinsic_fields(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """The intrinsics keys of ``obj`` (the top level or a frame), each of its type: numbers, ``w``/``h``
    positive whole numbers, ``camera_model`` a string."""
    out: dict[str, Any] = {}
    for key in _INTRINSIC_KEYS:
        if key not in obj:
            continue
        if key == "camera_model":
            out[key] = _string(obj, key, where)
            continue
        value = _number(obj[key], key, where)
        if key in ("w", "h"):
            if value < 1 or value != int(value):
                raise InputError(f"{where}: {key} must be a positive whole number of pixels, got {obj[key]!r}")
            value = int(value)
        out[key] = value
    return out


def _matrix(value: Any, where: str) -> np.ndarray:
    """``transform_matrix``: 4 (or 3) rows of 4 JSON numbers."""
    if not (isinstance(value, list) and len(value) in (3, 4)
            and all(isinstance(row, list) and len(row) == 4 for row in value)):
        raise InputError(f"{where}: transform_matrix must be 4 rows (or 3) of 4 numbers")
    return np.array([[_number(x, "transform_matrix", where) for x in row] for row in value])


def _image_path(root: Path, file_path: str, where: str) -> Path | None:
    """The image ``file_path`` names (relative to ``root``), None if there is none."""
    try:
        p = (root / file_path).resolve()
        if p.is_file():
            return p
        if not p.suffix:  # Blender-style "./train/r_0"
            for suffix in (".png", ".jpg", ".jpeg", ".PNG", ".JPG"):
                if p.with_suffix(suffix).is_file():
                    return p.with_suffix(suffix)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise InputError(f"{where}: {file_path!r} is not a usable path ({reason})") from None
    return None


def _intrinsics(intr: dict[str, Any], image: Path, where: str) -> tuple[np.ndarray, int, int, np.ndarray | None]:
    model = intr.get("camera_model", "OPENCV")
    if model not in _PERSPECTIVE_MODELS:
        raise InputError(f"{where}: camera_model {model} is not supported (recon reads perspective OPENCV cameras)")
    if "w" in intr and "h" in intr:
        w, h = intr["w"], intr["h"]
    else:
        w, h = image_io.probe_image(image)
    if "fl_x" in intr:
        fx = intr["fl_x"]
        fy = intr.get("fl_y", fx)
    elif "camera_angle_x" in intr:
        fx = focal_from_fov(intr["camera_angle_x"], w)
        fy = focal_from_fov(intr["camera_angle_y"], h) if "camera_angle_y" in intr else fx
    else:
        raise InputError(f"{where}: no focal length (fl_x or camera_angle_x)")
    K = check_intrinsics(intrinsics_matrix(fx, fy, intr.get("cx", w / 2.0), intr.get("cy", h / 2.0)), where, w, h)
    if intr.get("k4", 0.0) != 0.0:
        raise InputError(f"{where}: k4 is a fisheye coefficient; recon reads perspective OPENCV cameras")
    dist = np.array([intr.get(k, 0.0) for k in ("k1", "k2", "p1", "p2", "k3")])
    if not np.any(dist != 0.0):
        return K, w, h, None
    check_distortion(dist, K, w, h, where)
    return K, w, h, dist


def write(graph: SceneGraph, out_path: Path) -> Path:
    """Write the graph's posed views as ``transforms.json`` in the dataset's frame.

    Image paths are relative to the file when possible. Intrinsics go to the
    top level when every camera shares them, else to each frame.
    """
    out_path = Path(out_path)
    views = [v for v in graph.views() if v.camera is not None and v.image is not None]
    if not views:
        raise InputError(f"{graph.name}: no posed views with images to export")
    cams = [graph.camera_of(v) for v in views]

    def intr(cam: Camera) -> dict[str, Any]:
        return {"fl_x": cam.K[0, 0], "fl_y": cam.K[1, 1], "cx": cam.K[0, 2], "cy": cam.K[1, 2],
                "w": cam.width, "h": cam.height}

    shared = all(intr(c) == intr(cams[0]) for c in cams)
    meta: dict[str, Any] = {"camera_model": "OPENCV"}
    if shared:
        meta.update(intr(cams[0]))
    meta.update(graph.meta.get("transforms", {}))
    frames = []
    for view, cam in zip(views, cams):
        w2c = transform_world_to_camera(cam.world_to_camera, graph.to_dataset)
        frame: dict[str, Any] = {
            "file_path": _relative(graph.image_of(view), out_path.parent),
            "transform_matrix": opengl_from_world_to_camera(w2c).tolist(),
        }
        if view.mask:
            frame["mask_path"] = _relative(graph.resolve(view.mask), out_path.parent)
        if not shared:
            frame.update(intr(cam))
        frames.append(frame)
    meta["frames"] = frames
    return write_json(out_path, meta)


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:  # another drive
        return str(path.resolve())


LAYOUT = Layout(
    name="transforms",
    description="nerfstudio/instant-ngp transforms.json",
    detect=lambda p: _find(p) is not None,
    read=read,
)
