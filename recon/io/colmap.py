"""COLMAP models: ``sparse/0`` (binary or text) read through pycolmap, written as text.

The model's files are checked first (recon/io/colmap_check.py), so that a
damaged one is one line naming the file, never pycolmap's own failure.

Cameras of the perspective models (SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL,
RADIAL, OPENCV, and FULL_OPENCV without its extra radial terms) are
converted to ``K`` and OpenCV distortion; images are looked up by name in
``images/``; 3D points become the ``sfm`` point cloud.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from recon.errors import InputError
from recon.files import atomic_write
from recon.io.colmap_check import check_model
from recon.io.layout import ImportOptions, Layout, new_view
from recon.scene.camera import (
    check_distortion,
    check_intrinsics,
    check_pose,
    intrinsics_matrix,
    quaternion_from_rotation,
    transform_points,
    transform_world_to_camera,
)
from recon.scene.graph import Camera, PointCloud, SceneGraph
from recon.scene.names import POINTS_SFM

_MODEL_FILES = ("cameras.bin", "cameras.txt")


def find_model(path: Path) -> Path | None:
    """The folder that holds cameras/images/points3D, if ``path`` is a COLMAP scene."""
    for candidate in (path / "sparse" / "0", path / "sparse", path / "colmap" / "sparse" / "0", path):
        if candidate.is_dir() and any((candidate / f).is_file() for f in _MODEL_FILES):
            return candidate
    return None


def _image_dir(scene: Path, model: Path) -> Path:
    for candidate in (scene / "images", model.parent / "images", model.parent.parent / "images"):
        if candidate.is_dir():
            return candidate
    raise InputError(f"{scene}: COLMAP model found in {model} but no images/ folder beside it")


def camera_from_colmap(model_name: str, params: np.ndarray, width: int, height: int,
                       where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(K [3, 3], distortion (k1, k2, p1, p2, k3) or None) of a COLMAP camera model, checked for a ``width`` x
    ``height`` image."""
    p = [float(x) for x in params]
    dist = None
    if model_name == "SIMPLE_PINHOLE":
        K = intrinsics_matrix(p[0], p[0], p[1], p[2])
    elif model_name == "PINHOLE":
        K = intrinsics_matrix(p[0], p[1], p[2], p[3])
    elif model_name == "SIMPLE_RADIAL":
        K, dist = intrinsics_matrix(p[0], p[0], p[1], p[2]), np.array([p[3], 0, 0, 0, 0.0])
    elif model_name == "RADIAL":
        K, dist = intrinsics_matrix(p[0], p[0], p[1], p[2]), np.array([p[3], p[4], 0, 0, 0.0])
    elif model_name == "OPENCV":
        K, dist = intrinsics_matrix(p[0], p[1], p[2], p[3]), np.array(p[4:8] + [0.0])
    elif model_name == "FULL_OPENCV" and not any(p[9:12]):
        K, dist = intrinsics_matrix(p[0], p[1], p[2], p[3]), np.array(p[4:9])
    else:
        raise InputError(f"{where}: camera model {model_name} is not supported "
                         "(perspective pinhole/OpenCV models only)")
    K = check_intrinsics(K, where, width, height)
    if dist is not None and not np.any(dist):
        dist = None
    if dist is not None:
        check_distortion(dist, K, width, height, where)
    return K, dist


def read(path: Path, options: ImportOptions) -> SceneGraph:
    import pycolmap

    model = find_model(path)
    assert model is not None
    images_dir = _image_dir(path, model)
    check_model(model)
    try:
        rec = pycolmap.Reconstruction(str(model))
    except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError with C++ text
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{model}: cannot read COLMAP model ({reason})") from None
    graph = SceneGraph(name=path.name,
                       source={"path": str(path), "files": [str(p) for p in model.iterdir() if p.is_file()]})
    intr: dict[int, tuple[np.ndarray, np.ndarray | None, int, int]] = {}
    for cam_id, cam in rec.cameras.items():
        where = f"{model}: camera {cam_id}"
        K, dist = camera_from_colmap(cam.model.name, np.asarray(cam.params), int(cam.width), int(cam.height), where)
        intr[cam_id] = (K, dist, int(cam.width), int(cam.height))

    registered = sorted(rec.images.values(), key=lambda im: im.name)
    for i, im in enumerate(registered):
        image = images_dir / im.name
        if not image.is_file():
            raise InputError(f"{model}: image {im.name} has a camera but {image} does not exist")
        K, dist, w, h = intr[im.camera_id]
        w2c = check_pose(np.asarray(im.cam_from_world().matrix()), f"{model}: image {im.name}")
        cam = graph.add(Camera(id=f"camera/{i:04d}", K=K, world_to_camera=w2c, width=w, height=h,
                               distortion=dist, sensor=str(im.camera_id)))
        graph.add(new_view(i, Path(im.name).stem, image, cam.id))

    known = {im.name for im in registered}
    stray = sorted(p.relative_to(images_dir).as_posix() for p in images_dir.rglob("*")
                   if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    stray = [s for s in stray if s not in known]
    if stray:
        message = f"{images_dir}: {len(stray)} image(s) have no camera in {model}: {', '.join(stray[:5])}"
        if options.strict:
            raise InputError(message)
        warnings.warn(message + " (not registered; left out)", stacklevel=2)
        graph.meta["images_without_camera"] = stray

    if rec.num_points3D():
        xyz = np.array([p.xyz for p in rec.points3D.values()], dtype=np.float64)
        rgb = np.array([p.color for p in rec.points3D.values()], dtype=np.float64) / 255.0
        graph.add(PointCloud(id=POINTS_SFM, path=None, count=len(xyz), kind="sfm", points=xyz, colors=rgb))
    return graph


def write_text(graph: SceneGraph, out_dir: Path) -> Path:
    """Write ``cameras.txt``, ``images.txt`` and ``points3D.txt`` (PINHOLE cameras, dataset frame)."""
    from recon.io import ply
    out_dir = Path(out_dir)
    views = [v for v in graph.views() if v.camera is not None and v.image is not None]
    if not views:
        raise InputError(f"{graph.name}: no posed views with images to export")
    cam_lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    img_lines = ["# Image list with two lines of data per image:",
                 "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i, view in enumerate(views, start=1):
        cam = graph.camera_of(view)
        K = cam.K.tolist()
        cam_lines.append(f"{i} PINHOLE {cam.width} {cam.height} {K[0][0]!r} {K[1][1]!r} {K[0][2]!r} {K[1][2]!r}")
        w2c = transform_world_to_camera(cam.world_to_camera, graph.to_dataset)
        q = quaternion_from_rotation(w2c[:3, :3]).tolist()
        t = w2c[:3, 3].tolist()
        name = graph.image_of(view).name
        img_lines.append(f"{i} {q[0]!r} {q[1]!r} {q[2]!r} {q[3]!r} {t[0]!r} {t[1]!r} {t[2]!r} {i} {name}")
        img_lines.append("")
    pt_lines = ["# 3D point list with one line of data per point:",
                "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    sfm = graph.get(POINTS_SFM, PointCloud)
    if sfm is not None and sfm.path:
        pts, cols = ply.read_points(graph.resolve(sfm.path))
        pts = transform_points(pts, graph.to_dataset)
        cols = np.zeros_like(pts) if cols is None else cols
        rgb = np.clip(np.round(cols * 255), 0, 255).astype(int).tolist()
        pt_lines += [f"{k + 1} {p[0]!r} {p[1]!r} {p[2]!r} {c[0]} {c[1]} {c[2]} 0"
                     for k, (p, c) in enumerate(zip(pts.tolist(), rgb))]
    for name, lines in (("cameras.txt", cam_lines), ("images.txt", img_lines), ("points3D.txt", pt_lines)):
        text = "\n".join(lines) + "\n"
        atomic_write(out_dir / name, Path.write_text, text)
    return out_dir


LAYOUT = Layout(
    name="colmap",
    description="COLMAP model in sparse/0 with images/",
    detect=lambda p: p.is_dir() and find_model(p) is not None,
    read=read,
)
