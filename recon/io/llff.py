"""LLFF captures: ``poses_bounds.npy`` with ``images/`` and/or ``images_N/`` (N-times smaller copies).

``poses_bounds.npy`` is a float array [V, 17], one row per image in name order:
a 3x5 matrix (row-major) ``[R | t | hwf]`` followed by the near and far scene
depths. ``R``'s columns are the camera's axes in the world, in LLFF's order
(down, right, backwards), ``t`` is the camera centre, and ``hwf`` is the height,
width and focal length in pixels of the full-size photos. recon's camera
(camera.py: x right, y down, z forward) has the axes ``[right, down, forward] =
[c1, c0, -c2]``; the principal point is the image centre. The world frame is
kept as it is (``to_dataset`` is the identity), and the bounds become the
cameras' ``near`` and ``far``.

Which images are read: the folder whose factor N divides the requested
down-sampling (``--downscale``, relative to the full-size photos) most, so
that ``--downscale 8`` reads ``images_8/`` as they are and ``--downscale 16``
halves them; the stored size and focal are scaled to the images actually
read. A capture without a folder that fits (``images_8/`` alone, asked for
full size) is read from its largest images. Object masks come from
``masks/`` or ``masks_N/`` of the same N, named like the images.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from recon.errors import InputError
from recon.io import images as image_io
from recon.io.layout import ImportOptions, Layout, new_view
from recon.scene.camera import check_intrinsics, check_pose, intrinsics_matrix, invert_rigid
from recon.scene.graph import Camera, SceneGraph

FILE_NAME = "poses_bounds.npy"
_FOLDER = re.compile(r"^(images|masks)(?:_(\d+))?$")


def _folders(path: Path, kind: str) -> dict[int, Path]:
    """{factor: folder} of ``images/``, ``images_N/`` (kind "images") or the masks' likewise."""
    found: dict[int, Path] = {}
    if path.is_dir():
        for p in path.iterdir():
            m = _FOLDER.match(p.name)
            if m and m.group(1) == kind and p.is_dir():
                factor = int(m.group(2) or 1)
                if factor >= 1 and (kind == "masks" or image_io.list_images(p)):
                    found[factor] = p
    return found


def detect(path: Path) -> bool:
    return path.is_dir() and (path / FILE_NAME).is_file() and bool(_folders(path, "images"))


def choose_folder(folders: dict[int, Path], downscale: int, where: Path) -> tuple[int, int]:
    """(factor of the folder to read, down-sampling still to apply to it) for ``downscale`` of the full size."""
    fitting = [n for n in folders if downscale % n == 0]
    if fitting:
        n = max(fitting)
        return n, downscale // n
    if downscale == 1:
        return min(folders), 1
    have = ", ".join(folders[n].name for n in sorted(folders))
    raise InputError(f"{where}: --downscale {downscale} cannot be made from {have} by an integer factor")


def opencv_world_to_camera(matrix: np.ndarray) -> np.ndarray:
    """LLFF's camera-to-world [3, 4] (axes down, right, backwards; then the centre) -> world_to_camera [4, 4]."""
    c2w = np.eye(4)
    c2w[:3, 0] = matrix[:, 1]
    c2w[:3, 1] = matrix[:, 0]
    c2w[:3, 2] = -matrix[:, 2]
    c2w[:3, 3] = matrix[:, 3]
    return invert_rigid(c2w)


def read(path: Path, options: ImportOptions) -> SceneGraph:
    npy = path / FILE_NAME
    try:
        data = np.load(npy, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{npy}: cannot read ({exc})") from None
    if data.ndim != 2 or data.shape[1] != 17 or not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{npy}: expected a number array [images, 17] (3x5 pose and hwf, near, far); "
                         f"found {data.dtype} {list(data.shape)}")
    data = data.astype(np.float64)
    folders = _folders(path, "images")
    factor, remaining = choose_folder(folders, int(options.downscale), path)
    image_dir = folders[factor]
    images = image_io.list_images(image_dir)
    if len(images) != len(data):
        raise InputError(f"{npy}: {len(data)} poses but {len(images)} images in {image_dir}; "
                         "each image (in name order) needs one row")
    masks = _masks(path, factor, images) if options.masks else [None] * len(images)
    graph = SceneGraph(name=path.name, source={"path": str(path), "files": [str(npy)], "downscaled": factor})
    for i, (row, image) in enumerate(zip(data, images)):
        where = f"{npy}: row {i} ({image.name})"
        if not np.all(np.isfinite(row)):
            raise InputError(f"{where}: contains NaN or Inf")
        matrix = row[:15].reshape(3, 5)
        height, width, focal = matrix[:, 4]
        w, h = image_io.header_size(image)
        if min(height, width, focal) <= 0:
            raise InputError(f"{where}: height, width and focal must be positive "
                             f"(found {height:g}, {width:g}, {focal:g})")
        scale = w / width
        if abs(h / height - scale) > 0.01 * scale:
            raise InputError(f"{where}: the image is {w}x{h} but the stored size {width:g}x{height:g} "
                             "has another aspect ratio")
        K = check_intrinsics(intrinsics_matrix(focal * scale, focal * scale, w / 2, h / 2), where, w, h)
        near, far = (float(b) for b in row[15:17])
        cam = graph.add(Camera(id=f"camera/{i:04d}", K=K,
                               world_to_camera=check_pose(opencv_world_to_camera(matrix[:, :4]), where),
                               width=w, height=h, near=near if near > 0 else None, far=far if far > near else None))
        graph.add(new_view(i, image.stem, image, cam.id, masks[i]))
    graph.meta["llff"] = {"images": image_dir.name, "factor": factor * remaining}
    return graph


def _masks(path: Path, factor: int, images: list[Path]) -> list[Path | None]:
    folder = _folders(path, "masks").get(factor)
    if folder is None:
        return [None] * len(images)
    by_stem = {p.stem: p for p in image_io.list_images(folder)}
    missing = [im.name for im in images if im.stem not in by_stem]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(f"{folder}: no mask for {missing[0]}{more}")
    return [by_stem[im.stem] for im in images]


LAYOUT = Layout(
    name="llff",
    description="LLFF capture with poses_bounds.npy and images/ or images_N/",
    detect=detect,
    read=read,
)
