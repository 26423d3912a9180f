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


def main() -> int:
    ap = argparse.ArgumentParser(description="convert a copy of a capture into the layout its protocol reads")
    sub = ap.add_subparsers(dest="command", required=True)
    nex = sub.add_parser("llff-from-nex", help="a NeX-layout LLFF copy into the LLFF release layout")
    nex.add_argument("source", type=Path)
    nex.add_argument("target", type=Path)
    args = ap.parse_args()
    try:
        print(json.dumps(llff_from_nex(args.source, args.target)))
    except (OSError, ValueError) as exc:
        print(f"captures.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
