"""Known defects of the real captures' copies (../shared/realdata), corrected where a benchmark reads them.

castle_p30's ``sparse/0/images.txt`` holds each camera's rotation transposed (its quaternion conjugated); the
translations are right. Measured: of the SIFT matches COLMAP verifies between 4 of its views, 0 of 1263 satisfy the
stored cameras' epipolar geometry within 4 pixels, 1227 with the rotations transposed. As stored, the 30 optical
axes point away from any common point (171 degrees from their nearest common point, median); transposed, the
cameras ring the courtyard at one height, looking across it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
