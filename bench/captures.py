"""Known defects of the real captures' copies (../shared/realdata), corrected where a benchmark reads them.

castle_p30's ``sparse/0/images.txt`` holds each camera's rotation transposed (its quaternion conjugated); the
translations are right. Measured: of the SIFT matches COLMAP verifies between 4 of its views, 0 of 1263 satisfy the
stored cameras' epipolar geometry within 4 pixels, 1227 with the rotations transposed. As stored, the 30 optical
axes point away from any common point (171 degrees from their nearest common point, median); transposed, the
cameras ring the courtyard at one height, looking across it.

Copies of other captures in another layout are converted to the one their protocol reads. :func:`llff_from_nex`
turns a copy of an LLFF capture as NeX (Wizadwongsa et al., CVPR 2021) prepares one (COLMAP re-run on photos about
1000 pixels wide, undistorted: ``images/``, ``poses_bounds.npy`` [V, 14] without the intrinsics, ``hwf_cxcy.npy``
with one pinhole camera whose principal point is off the centre) into the LLFF release layout that
``recon.io.llff`` and LLFF's protocol read (``images_8/``, about 500 pixels wide, and ``poses_bounds.npy`` [V, 17]).

    python bench/captures.py llff-from-nex COPY/dataset/trex OUT/llff_trex

:func:`from_strecha` turns a capture of Strecha et al.'s benchmark (CVPR 2008: fountain-P11, entry-P10, Herz-Jesus-P8,
castle-P30..., as kept in openMVG/SfM_quality_evaluation: ``images/NNNN.jpg`` at 3072x2048 with measured cameras in
``gt_dense_cameras/NNNN.jpg.camera``) into a ``transforms.json`` beside its photos, at their size or down-sampled.

    python bench/captures.py from-strecha COPY/fountain-P11 OUT/fountain_p11 [--downscale 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

TRANSPOSED_ROTATIONS = {"castle_p30"}


def captures_under(root: Path, names: str = "") -> list[Path]:
    """The capture folders under ``root``, sorted, only the comma-separated ``names`` if any are given."""
    wanted = set(filter(None, names.split(",")))
    return sorted(p for p in root.iterdir() if p.is_dir() and (not wanted or p.name in wanted))


def corrected(capture: Path, scratch: Path) -> Path:
    """``capture`` itself, or for one with a known defect a corrected copy of the same name under ``scratch``.

    The copy links to the photos and rewrites only the COLMAP text model: every image's quaternion
    ``(qw, qx, qy, qz)`` becomes ``(qw, -qx, -qy, -qz)``, the inverse rotation, with its translation kept. A copy
    without the COLMAP model (a transforms.json written from the corrected cameras) is read as it is.
    """
    model = capture / "sparse" / "0"
    if capture.name not in TRANSPOSED_ROTATIONS or not (model / "images.txt").is_file():
        return capture
    out = scratch / capture.name
    (out / "sparse" / "0").mkdir(parents=True, exist_ok=True)
    for name in ("cameras.txt", "points3D.txt"):
        shutil.copyfile(model / name, out / "sparse" / "0" / name)
    lines = (model / "images.txt").read_text().splitlines()
    fixed, pose_line = [], True
    for line in lines:
        if line.startswith("#"):
            fixed.append(line)
            continue
        if pose_line:  # IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, then one line of 2D points
            f = line.split()
            f[2:5] = [repr(-float(v)) for v in f[2:5]]
            line = " ".join(f)
        fixed.append(line)
        pose_line = not pose_line
    (out / "sparse" / "0" / "images.txt").write_text("\n".join(fixed) + "\n")
    if not (out / "images").exists():
        os.symlink((capture / "images").resolve(), out / "images")
    return out


def llff_from_nex(source: Path, target: Path) -> dict:
    """Convert a NeX-layout LLFF copy (see the module's docstring) into the LLFF release layout; what was done.

    LLFF's ``poses_bounds.npy`` holds one focal length for a principal point at the image's centre, so each photo is
    cropped to the largest even-sided window centred on the principal point (within half a pixel), then halved by
    2x2 means (about the size of the release's ``images_8``; the height, width and focal length in the file are 8x
    theirs, as the release's are for its full-size photos) and written as JPEG of quality 95, named
    ``image000.jpg``... in the photos' sorted order, the order of the poses. The rotations, translations and
    near / far bounds are kept. A ``target`` that already holds ``images_8/`` is refused.
    """
    from PIL import Image

    poses = np.load(source / "poses_bounds.npy")
    height, width, fx, fy, cx, cy = np.load(source / "hwf_cxcy.npy").ravel()
    if poses.ndim != 2 or poses.shape[1] != 14:
        raise ValueError(f"{source}: poses_bounds.npy is {poses.shape}, not NeX's [V, 14]")
    if abs(fx - fy) > 1e-6 * fx:
        raise ValueError(f"{source}: fx {fx} and fy {fy} differ; LLFF's layout holds one focal length")
    photos = sorted(p for p in (source / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(photos) != len(poses):
        raise ValueError(f"{source}: {len(photos)} photos for {len(poses)} poses")
    side_w = int(np.floor(2 * min(cx, width - cx))) // 2 * 2  # even, so that halving keeps the centre
    side_h = int(np.floor(2 * min(cy, height - cy))) // 2 * 2
    x0, y0 = int(round(cx - side_w / 2)), int(round(cy - side_h / 2))
    if (target / "images_8").exists():
        raise ValueError(f"{target / 'images_8'} exists; convert into a new folder")
    (target / "images_8").mkdir(parents=True)
    for i, photo in enumerate(photos):
        with Image.open(photo) as im:
            if im.size != (int(width), int(height)):
                raise ValueError(f"{photo}: {im.size[0]}x{im.size[1]}, not the camera's {int(width)}x{int(height)}")
            small = im.convert("RGB").crop((x0, y0, x0 + side_w, y0 + side_h)).resize(
                (side_w // 2, side_h // 2), Image.Resampling.BOX)
            small.save(target / "images_8" / f"image{i:03d}.jpg", quality=95)
    hwf = np.array([side_h // 2 * 8, side_w // 2 * 8, fx / 2 * 8])  # at the release's full size, 8x images_8
    rows = np.concatenate([poses[:, :12].reshape(-1, 3, 4), np.broadcast_to(hwf[None, :, None], (len(poses), 3, 1))],
                          axis=2)
    np.save(target / "poses_bounds.npy", np.concatenate([rows.reshape(-1, 15), poses[:, 12:14]], axis=1))
    return {"views": len(poses), "crop": [x0, y0, side_w, side_h], "size": [side_w // 2, side_h // 2],
            "centre_error_px": [round(float(x0 + side_w / 2 - cx), 3), round(float(y0 + side_h / 2 - cy), 3)],
            "focal": round(float(fx / 2), 3)}


def read_strecha_camera(path: Path) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(K [3, 3], world_to_camera [4, 4], width, height) of one ``.camera`` file.

    Its 9 lines: K's three rows, the radial distortion (three zeros: the photos are undistorted), the
    camera-to-world rotation's three rows, the camera's centre in the world, then width and height; a world point
    ``X`` projects to ``K R^T (X - C)``.
    """
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if len(rows) != 9 or [len(r) for r in rows] != [3] * 8 + [2]:
        raise ValueError(f"{path}: not a Strecha camera file (9 lines: K, distortion, R, centre, width height)")
    numbers = np.array([[float(v) for v in r] for r in rows[:8]])
    if np.any(numbers[3] != 0):
        raise ValueError(f"{path}: radial distortion {numbers[3].tolist()}; only undistorted photos are read")
    K, rotation, centre = numbers[:3], numbers[4:7], numbers[7]
    w2c = np.eye(4)
    w2c[:3, :3] = rotation.T
    w2c[:3, 3] = -rotation.T @ centre
    return K, w2c, int(rows[8][0]), int(rows[8][1])


def from_strecha(source: Path, target: Path, downscale: int = 1) -> dict:
    """Convert a Strecha capture (see the module's docstring) into ``target/images/`` and ``target/transforms.json``.

    With ``downscale`` N > 1 each photo is area-averaged by N (recon's own down-sampling: the edges that do not
    divide cropped, the intrinsics' first two rows divided by N) and written as JPEG of quality 95; at 1 the photos
    are copied as they are. A ``target`` that already holds ``transforms.json`` is refused.
    """
    from PIL import Image

    from recon.io import images as image_io
    from recon.io import transforms
    from recon.io.layout import new_view
    from recon.scene.graph import Camera, SceneGraph

    if downscale < 1:
        raise ValueError(f"--downscale {downscale}: a positive integer is wanted")
    photos = sorted((source / "images").glob("*.jpg"))
    if not photos:
        raise ValueError(f"{source}: no images/*.jpg")
    if (target / transforms.FILE_NAME).exists():
        raise ValueError(f"{target / transforms.FILE_NAME} exists; convert into a new folder")
    cameras = [read_strecha_camera(source / "gt_dense_cameras" / f"{photo.name}.camera") for photo in photos]
    (target / "images").mkdir(parents=True, exist_ok=True)
    graph = SceneGraph(name=target.name)
    for i, (photo, (K, w2c, width, height)) in enumerate(zip(photos, cameras)):
        out = target / "images" / photo.name
        if downscale == 1:
            shutil.copyfile(photo, out)
        else:
            pixels = image_io.downsample(image_io.read_image(photo), downscale)
            Image.fromarray(image_io.to_uint8(pixels)).save(out, quality=95)
        K = K.copy()
        K[:2] /= downscale
        cam = graph.add(Camera(id=f"camera/{i:04d}", K=K, world_to_camera=w2c, width=width // downscale,
                               height=height // downscale))
        graph.add(new_view(i, photo.stem, out, cam.id))
    transforms.write(graph, target / transforms.FILE_NAME)
    return {"views": len(photos), "size": [width // downscale, height // downscale], "downscale": downscale}


def main() -> int:
    ap = argparse.ArgumentParser(description="convert a copy of a capture into the layout its protocol reads")
    sub = ap.add_subparsers(dest="command", required=True)
    nex = sub.add_parser("llff-from-nex", help="a NeX-layout LLFF copy into the LLFF release layout")
    nex.add_argument("source", type=Path)
    nex.add_argument("target", type=Path)
    strecha = sub.add_parser("from-strecha", help="a Strecha et al. capture into transforms.json beside its photos")
    strecha.add_argument("source", type=Path)
    strecha.add_argument("target", type=Path)
    strecha.add_argument("--downscale", type=int, default=1, help="integer area-mean down-sampling (default 1)")
    args = ap.parse_args()
    try:
        if args.command == "from-strecha":
            print(json.dumps(from_strecha(args.source, args.target, args.downscale)))
        else:
            print(json.dumps(llff_from_nex(args.source, args.target)))
    except (OSError, ValueError) as exc:
        print(f"captures.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
