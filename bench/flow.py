"""Measure whether dense optical flow (OpenCV's DIS) gives correspondences where SIFT is thin.

For pairs of training views of real captures (the views bench/poses.py picks:
DTU protocol ids, or spread and consecutive views), DIS flow is computed both
ways on the photos at most ``--long-side`` pixels wide; a vector on an 8-pixel
grid is kept when the backward flow returns it within a pixel, and counted
correct when its Sampson error under the reference cameras' epipolar geometry
is within 4 pixels of the photo. Where the capture has masks, only vectors that
start on the object count (a turntable's background stands still). Prints one
JSON line per pair and writes them to ``--out``. Needs ``opencv-python-headless``, which recon itself does not.

    python bench/flow.py --data DIR --out FILE
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from recon.sfm.fewview import fundamental, sampson_error

sys.path.insert(0, str(Path(__file__).parent))
from captures import captures_under  # noqa: E402
from optimize import environment  # noqa: E402
from poses import read_reference  # noqa: E402

DTU_TRAIN = [25, 22, 28, 40, 44, 48, 0, 8, 13]
GRID = 8


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--long-side", type=int, default=800)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import cv2

    rows = []
    with tempfile.TemporaryDirectory() as scratch:  # corrected copies of captures with a known defect
        for capture in captures_under(args.data):
            photos = read_reference(capture, Path(scratch))
            if photos is None:
                continue
            images, masks, cameras = photos
            selections = {"dtu": DTU_TRAIN[: args.views]} if capture.name.startswith("dtu") else {
                "spread": spread(cameras, args.views),
                "consecutive": list(range((len(images) - args.views) // 2, (len(images) + args.views) // 2))}
            for selection, chosen in selections.items():
                for a, b in itertools.combinations(chosen, 2):
                    mask = masks[a] if masks else None
                    row = {"capture": capture.name, "selection": selection, "views": [a, b],
                           **flow_pair(cv2, images[a], cameras[a], images[b], cameras[b], mask, args.long_side)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "dis-flow", "environment": environment(), "runs": rows},
                                   indent=1) + "\n")
    return 0


def spread(cameras, count: int) -> list[int]:
    """Farthest-point sampling over the camera centres from the one nearest their centroid (as the views stage)."""
    centers = np.stack([-w2c[:3, :3].T @ w2c[:3, 3] for _, w2c in cameras])
    chosen = [int(np.argmin(np.linalg.norm(centers - centers.mean(axis=0), axis=1)))]
    dist = np.linalg.norm(centers - centers[chosen[0]], axis=1)
    while len(chosen) < count:
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(centers - centers[chosen[-1]], axis=1))
    return chosen


def flow_pair(cv2, path_a: Path, camera_a, path_b: Path, camera_b, mask: Path | None, long_side: int) -> dict:
    """Grid vectors (on the object, if masked), those consistent forward and backward, those the reference confirms."""
    with Image.open(path_a) as im:
        scale = min(1.0, long_side / max(im.size))
    gray_a, gray_b = _gray(path_a, scale), _gray(path_b, scale)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    forward, backward = dis.calc(gray_a, gray_b, None), dis.calc(gray_b, gray_a, None)
    h, w = gray_a.shape
    ys, xs = np.mgrid[GRID // 2 : h : GRID, GRID // 2 : w : GRID].reshape(2, -1)
    start = np.stack([xs, ys], axis=1)
    if mask is not None:
        on_object = _gray(mask, 1.0).astype(bool)
        keep = on_object[np.minimum((ys / scale).astype(int), on_object.shape[0] - 1),
                         np.minimum((xs / scale).astype(int), on_object.shape[1] - 1)]
        start, xs, ys = start[keep], xs[keep], ys[keep]
    moved = start + forward[ys, xs]
    inside = (moved[:, 0] >= 0) & (moved[:, 0] < w - 1) & (moved[:, 1] >= 0) & (moved[:, 1] < h - 1)
    back = backward[np.clip(moved[:, 1].astype(int), 0, h - 1), np.clip(moved[:, 0].astype(int), 0, w - 1)]
    kept = inside & (np.linalg.norm(moved + back - start, axis=1) < 1.0)
    error = sampson_error(fundamental(camera_a[0], camera_a[1], camera_b[0], camera_b[1]),
                          (start[kept] + 0.5) / scale, (moved[kept] + 0.5) / scale)
    return {"grid": int(len(start)), "consistent": int(kept.sum()), "correct": int(np.sum(error < 4.0))}


def _gray(path: Path, scale: float) -> np.ndarray:
    """uint8 [H, W]: the image in grey, resized by ``scale``."""
    with Image.open(path) as im:
        size = (round(im.size[0] * scale), round(im.size[1] * scale))
        return np.asarray(im.convert("L").resize(size, Image.BILINEAR))


if __name__ == "__main__":
    sys.exit(main())
