"""DTU scenes in their two common layouts.

**IDR / NeuS** (``scanN/image/000000.png``, ``scanN/mask/000.png``,
``cameras.npz`` or ``cameras_sphere.npz``): image ``i`` (in name order) has
``world_mat_i`` and ``scale_mat_i``; ``P = world_mat @ scale_mat`` projects
the normalised frame (object inside the unit sphere) to pixels, so recon's
world frame is that normalised frame and ``scale_mat`` maps it back to DTU's
millimetres. Scenes made by ``recon data synth`` use this layout and add
``gt/mesh.ply``, ``gt/points.ply`` (dataset frame) and ``gt/scene.json``.

**DTU's own** (``Rectified/scanN/rect_{i+1:03d}_{light}_r5000.png``) with
calibration either from DTU's ``Calibration/cal18/pos_{i+1:03d}.txt`` (3x4
projection matrices) or MVSNet-style ``Cameras/{i:08d}_cam.txt`` (4x4
world-to-camera extrinsic and 3x3 intrinsic); object masks from the
``idrmasks`` release used by RegNeRF (``idrmasks/scanN/mask/{i:03d}.png`` or
``idrmasks/scanN/{i:03d}.png``). There is no scale matrix, so recon
normalises: the point nearest to every optical axis becomes the origin and
the cameras sit at a mean distance of 3.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from recon.errors import InputError
from recon.io import images as image_io
from recon.io import ply
from recon.io.images import header_size
from recon.io.layout import ImportOptions, Layout, new_view
from recon.scene.camera import (
    axes_normal_equations,
    camera_center,
    check_intrinsics,
    check_pose,
    decompose_projection,
    transform_world_to_camera,
    viewing_direction,
)
from recon.scene.graph import Camera, Mesh, PointCloud, SceneGraph
from recon.scene.names import MESH_GROUND_TRUTH, POINTS_GROUND_TRUTH

CAMERA_FILES = ("cameras.npz", "cameras_sphere.npz")
IMAGE_DIRS = ("image", "images")
RECT_PATTERN = re.compile(r"^rect_(\d{3})_(\d|max)(?:_r\d{4})?\.png$")
CAMERA_DISTANCE = 3.0


def camera_from_projection(P: np.ndarray, where: str, width: int, height: int, cam_id: str) -> Camera:
    P = np.asarray(P, dtype=np.float64)[:3, :4]
    if not np.all(np.isfinite(P)):
        raise InputError(f"{where}: projection matrix contains NaN or Inf")
    try:
        K, w2c = decompose_projection(P)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None
    return Camera(id=cam_id, K=check_intrinsics(K, where, width, height), world_to_camera=check_pose(w2c, where),
                  width=width, height=height)


def read_projection_txt(path: Path) -> np.ndarray:
    """A 3x4 projection matrix from a whitespace-separated text file (an optional header line is skipped)."""
    try:
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if len(r) == 4][-3:]
        P = np.array(rows, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read a 3x4 projection matrix ({exc})") from None
    if P.shape != (3, 4):
        raise InputError(f"{path}: expected a 3x4 projection matrix")
    return P


def read_mvsnet_cam(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(K [3, 3], world_to_camera [4, 4]) of an MVSNet ``*_cam.txt``."""
    try:
        words = path.read_text().split()
        ext = np.array(words[words.index("extrinsic") + 1 : words.index("extrinsic") + 17], dtype=np.float64)
        intr = np.array(words[words.index("intrinsic") + 1 : words.index("intrinsic") + 10], dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not an MVSNet camera file ({exc})") from None
    if ext.size != 16 or intr.size != 9:
        raise InputError(f"{path}: not an MVSNet camera file (needs a 4x4 extrinsic and 3x3 intrinsic)")
    return intr.reshape(3, 3), ext.reshape(4, 4)


def focus_normalization(cameras: list[Camera]) -> np.ndarray:
    """Similarity [4, 4] from a normalised frame to the cameras' frame.

    The origin of the normalised frame is the point nearest (least squares) to
    every optical axis, and the cameras lie at a mean distance of 3 from it.
    """
    centers = np.stack([camera_center(c.world_to_camera) for c in cameras])
    dirs = np.stack([viewing_direction(c.world_to_camera) for c in cameras])
    A, b = axes_normal_equations(centers, dirs)
    focus = np.linalg.lstsq(A, b, rcond=None)[0] if len(cameras) > 1 else centers[0] + dirs[0]
    scale = np.linalg.norm(centers - focus, axis=1).mean() / CAMERA_DISTANCE
    S = np.eye(4)
    S[:3, :3] *= scale
    S[:3, 3] = focus
    return S


def normalise(graph: SceneGraph, to_dataset: np.ndarray) -> None:
    """Move every camera from the dataset frame into the frame ``to_dataset`` maps from."""
    from_dataset = np.linalg.inv(to_dataset)
    for cam in graph.cameras():
        cam.world_to_camera = transform_world_to_camera(cam.world_to_camera, from_dataset)
    graph.to_dataset = to_dataset


def scan_number(name: str) -> int | None:
    m = re.fullmatch(r"scan(\d+)(?:_.*)?", name)
    return int(m.group(1)) if m else None


# --- IDR / NeuS ---------------------------------------------------------------------------


def _idr_parts(path: Path) -> tuple[Path, Path] | None:
    if not path.is_dir():
        return None
    cams = next((path / f for f in CAMERA_FILES if (path / f).is_file()), None)
    imgs = next((path / d for d in IMAGE_DIRS if (path / d).is_dir()), None)
    return (imgs, cams) if cams is not None and imgs is not None else None


def read_idr(path: Path, options: ImportOptions) -> SceneGraph:
    parts = _idr_parts(path)
    assert parts is not None
    image_dir, cam_file = parts
    images = image_io.list_images(image_dir)
    if not images:
        raise InputError(f"{image_dir}: no images")
    try:
        with open(cam_file, "rb") as f, np.load(f) as archive:  # closed even when numpy cannot read it
            npz = dict(archive)
    except Exception as exc:  # numpy's and zipfile's readers raise many kinds on a damaged archive
        raise InputError(f"{cam_file}: cannot read camera file ({type(exc).__name__}: {exc})") from None
    world_ids = sorted(int(k.rsplit("_", 1)[1]) for k in npz if re.fullmatch(r"world_mat_\d+", k))
    extra = [i for i in world_ids if i >= len(images)]
    if extra:
        raise InputError(
            f"{cam_file}: world_mat_{extra[0]} has no image ({len(images)} images in {image_dir}, "
            f"{len(world_ids)} cameras)"
        )
    graph = SceneGraph(name=path.name, source={"path": str(path), "files": [str(cam_file)]})
    masks = _idr_masks(path, len(images)) if options.masks else [None] * len(images)
    to_dataset = _npz_matrix(npz, "scale_mat_0", cam_file) if "scale_mat_0" in npz else np.eye(4)
    if abs(np.linalg.det(to_dataset[:3, :3])) < 1e-12 or not np.allclose(to_dataset[3], [0.0, 0.0, 0.0, 1.0]):
        raise InputError(f"{cam_file}: scale_mat_0 is not an invertible similarity (bottom row [0, 0, 0, 1])")
    for i, image in enumerate(images):
        where = f"{cam_file}: world_mat_{i} ({image.name})"
        if f"world_mat_{i}" not in npz:
            raise InputError(f"{image}: image has no camera (no world_mat_{i} in {cam_file.name})")
        scale_mat = _npz_matrix(npz, f"scale_mat_{i}", cam_file) if f"scale_mat_{i}" in npz else to_dataset
        if not np.allclose(scale_mat, to_dataset):
            raise InputError(f"{cam_file}: scale_mat_{i} differs from scale_mat_0; "
                             "recon needs one normalisation per scene")
        w, h = header_size(image)
        P = _npz_matrix(npz, f"world_mat_{i}", cam_file) @ scale_mat
        cam = graph.add(camera_from_projection(P, where, w, h, f"camera/{i:04d}"))
        graph.add(new_view(i, image.stem, image, cam.id, masks[i]))
    graph.to_dataset = to_dataset
    scan = scan_number(path.name)
    if scan is not None:
        graph.meta["scan"] = scan
    _ground_truth(graph, path)
    return graph


def _npz_matrix(npz: dict[str, np.ndarray], key: str, cam_file: Path) -> np.ndarray:
    """``npz[key]`` as a finite float64 [4, 4] (a [3, 4] one gets the row [0, 0, 0, 1])."""
    value = npz[key]
    if value.dtype.kind not in "biuf" or value.shape not in ((4, 4), (3, 4)):
        raise InputError(f"{cam_file}: {key} must be a 4x4 matrix of numbers, got {value.dtype} {value.shape}")
    matrix = np.vstack([value, [0.0, 0.0, 0.0, 1.0]]) if value.shape == (3, 4) else value.astype(np.float64)
    if not np.all(np.isfinite(matrix)):
        raise InputError(f"{cam_file}: {key} contains NaN or Inf")
    return matrix


def _idr_masks(path: Path, count: int) -> list[Path | None]:
    mask_dir = next((path / d for d in ("mask", "masks") if (path / d).is_dir()), None)
    if mask_dir is None:
        return [None] * count
    masks = image_io.list_images(mask_dir)
    if len(masks) != count:
        raise InputError(f"{mask_dir}: {len(masks)} masks for {count} images; each image needs one mask")
    return list(masks)


def _ground_truth(graph: SceneGraph, path: Path) -> None:
    gt = path / "gt"
    if (gt / "scene.json").is_file():
        graph.meta["synthetic"] = json.loads((gt / "scene.json").read_text())
    if (gt / "mesh.ply").is_file():
        counts = ply.element_counts(gt / "mesh.ply")
        graph.add(Mesh(id=MESH_GROUND_TRUTH, path=str(gt / "mesh.ply"), vertices=counts.get("vertex", 0),
                       faces=counts.get("face", 0), kind="ground_truth", frame="dataset"))
    if (gt / "points.ply").is_file():
        add_ground_truth_points(graph, gt / "points.ply")


def add_ground_truth_points(graph: SceneGraph, path: Path) -> None:
    graph.add(PointCloud(id=POINTS_GROUND_TRUTH, path=str(path), count=ply.element_counts(path).get("vertex", 0),
                         kind="ground_truth", frame="dataset"))


IDR_LAYOUT = Layout(
    name="dtu-idr",
    description="DTU/IDR scan with image/, mask/ and cameras.npz or cameras_sphere.npz",
    detect=lambda p: _idr_parts(p) is not None,
    read=read_idr,
)


# --- DTU's own Rectified layout --------------------------------------------------------------


def _rect_images(path: Path) -> dict[int, dict[str, Path]]:
    """{view index: {light: file}} of the ``rect_*`` images in ``path``."""
    found: dict[int, dict[str, Path]] = {}
    if path.is_dir():
        for p in path.iterdir():
            m = RECT_PATTERN.match(p.name)
            if m:
                found.setdefault(int(m.group(1)) - 1, {})[m.group(2)] = p
    return found


def light_name(light: int) -> str:
    return "max" if light >= 7 else str(light)


def find_upwards(start: Path, relative: str, levels: int = 4) -> Path | None:
    """``relative`` under ``start`` or one of its first ``levels`` ancestors."""
    for base in [start, *list(start.parents)[:levels]]:
        if (base / relative).exists():
            return base / relative
    return None


def read_rectified(path: Path, options: ImportOptions) -> SceneGraph:
    found = _rect_images(path)
    light = light_name(options.light)
    images = {i: lights[light] for i, lights in sorted(found.items()) if light in lights}
    if not images:
        raise InputError(f"{path}: no rect_*_{light}_r5000.png images for light {light} (lights present: "
                         f"{', '.join(sorted({k for v in found.values() for k in v}))})")
    cal = find_upwards(path, "Calibration/cal18")
    mvs = find_upwards(path, "Cameras")
    if cal is None and mvs is None:
        raise InputError(f"{path}: no calibration; looked for Calibration/cal18/pos_*.txt and Cameras/*_cam.txt "
                         f"in this folder and its parents")
    graph = SceneGraph(name=path.name, source={"path": str(path), "files": []})
    mask_root = _idr_mask_root(path) if options.masks else None
    for i, image in images.items():
        w, h = header_size(image)
        if cal is not None:
            pos = cal / f"pos_{i + 1:03d}.txt"
            if not pos.is_file():
                raise InputError(f"{image}: image has no camera ({pos} is missing)")
            cam = camera_from_projection(read_projection_txt(pos), str(pos), w, h, f"camera/{i:04d}")
            graph.source["files"].append(str(pos))
        elif mvs is not None:
            cam_txt = mvs / f"{i:08d}_cam.txt"
            if not cam_txt.is_file():
                raise InputError(f"{image}: image has no camera ({cam_txt} is missing)")
            K, w2c = read_mvsnet_cam(cam_txt)
            if not (0 < K[0, 2] < w and 0 < K[1, 2] < h):
                raise InputError(f"{cam_txt}: principal point ({K[0, 2]:.1f}, {K[1, 2]:.1f}) lies outside the "
                                 f"{w}x{h} image; these intrinsics are for another resolution")
            cam = Camera(id=f"camera/{i:04d}", K=check_intrinsics(K, str(cam_txt), w, h),
                         world_to_camera=check_pose(w2c, str(cam_txt)), width=w, height=h)
            graph.source["files"].append(str(cam_txt))
        graph.add(cam)
        mask = _idr_mask(mask_root, i)
        graph.add(new_view(i, image.stem, image, cam.id, mask))
    normalise(graph, focus_normalization(graph.cameras()))
    scan = scan_number(path.name)
    if scan is not None:
        graph.meta["scan"] = scan
        stl = find_upwards(path, f"Points/stl/stl{scan:03d}_total.ply")
        if stl is not None:
            add_ground_truth_points(graph, stl)
            obs = find_upwards(path, f"ObsMask/ObsMask{scan}_10.mat")
            if obs is not None:
                graph.meta["dtu_eval_root"] = str(obs.parent.parent)
    graph.meta["light"] = light
    return graph


def _idr_mask_root(path: Path) -> Path | None:
    for rel in (f"idrmasks/{path.name}", f"submission_data/idrmasks/{path.name}"):
        root = find_upwards(path, rel)
        if root is not None:
            return root / "mask" if (root / "mask").is_dir() else root
    return None


def _idr_mask(root: Path | None, index: int) -> Path | None:
    if root is None:
        return None
    p = root / f"{index:03d}.png"
    return p if p.is_file() else None


RECTIFIED_LAYOUT = Layout(
    name="dtu-rectified",
    description="DTU Rectified/scanN/rect_*_r5000.png with Calibration/cal18 or Cameras/*_cam.txt",
    detect=lambda p: bool(_rect_images(p)),
    read=read_rectified,
)
