"""How right the stereo points are on real captures with object masks: a test of the init stage's stereo by silhouettes.

A point on the object projects inside the object's mask in every view that frames it, whether or not the view sees
it (masks are silhouettes). So of the stereo points that land inside the masks of the training views (the object's
points; the default preset also keeps the background's), the share that lands inside the mask of every held-out
view too is a measure of their depth that needs no ground-truth surface: a point at the wrong depth leaves the
silhouette from other directions. Runs the init stage of each capture under bench/real.py's protocol (the training
views of bench/real.py, every held-out view with a mask as a judge) and prints one JSON line per run; captures
without masks get the stereo's own figures only (points, the share of pixels whose depth was kept).

    python bench/stereo_masks.py --root ../shared/realdata --scenes h3ds_0cd3f3,dtu_scan65 --views 3,6 \\
        --out bench/results/stereo-masks-cpu.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from captures import captures_under, corrected  # noqa: E402
from optimize import environment, parse_variant, record  # noqa: E402
from real import DEFAULT_ROOT, scene_protocol  # noqa: E402


def silhouette_scores(graph, points: np.ndarray, slack: int) -> dict:
    """Share of ``points`` inside every training mask, and of those, the share inside every held-out mask that
    frames them (masks grown by ``slack`` pixels against their edges' blur and the cameras' error)."""
    from PIL import Image

    from recon.geometry.meshing import framed, inside_hull
    from recon.io import images as image_io

    def cameras(views) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for view in views:
            cam = graph.camera_of(view)
            mask = image_io.read_mask(graph.resolve(view.mask))
            if mask.shape != (cam.height, cam.width):  # a mask at the photo's full size: brought to the camera's
                mask = np.asarray(Image.fromarray(mask).resize((cam.width, cam.height), Image.NEAREST))
            out.append((cam.K, cam.world_to_camera, mask))
        return out

    def framing(cams) -> np.ndarray:
        """How many of ``cams`` frame each point (in front of the camera, inside the image)."""
        count = np.zeros(len(points), dtype=np.int64)
        for K, w2c, mask in cams:
            count += framed(points, K, w2c, mask.shape[1], mask.shape[0])[1]
        return count

    train = cameras(graph.views("train"))
    held = cameras([v for v in graph.views("test") if v.mask and v.camera is not None])
    on_object = inside_hull(points, train, dilate=slack)
    consistent = inside_hull(points, held, dilate=slack)
    obj = int(on_object.sum())
    return {"points": int(len(points)), "object_points": obj, "object_share": obj / max(1, len(points)),
            "silhouette_consistent": float(consistent[on_object].mean()) if obj else None,
            "judges": len(held), "mean_judges_per_point": float(framing(held)[on_object].mean()) if obj else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--scenes", default="", help="comma-separated folder names (default: every capture; the "
                    "silhouette scores where it has masks, the stereo's own figures everywhere)")
    ap.add_argument("--views", default="3,6,9")
    ap.add_argument("--variant", action="append", default=[], help="NAME=PRESET[,section.key=value...]")
    ap.add_argument("--slack", type=int, default=2, help="pixels the judging masks are grown by")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()

    from recon.config import load_config
    from recon.pipeline import run_scene
    from recon.scene.graph import PointCloud
    from recon.scene.names import POINTS_MVS, metrics_id

    variants = [parse_variant(v) for v in (args.variant or ["default=default"])]
    report: dict = {"benchmark": "stereo-masks", "environment": environment(), "note": args.note,
                    "slack": args.slack, "variants": {n: {"preset": p, "overrides": o} for n, p, o in variants},
                    "runs": []}
    with tempfile.TemporaryDirectory() as fixes:  # corrected copies of captures with a known defect (bench/captures.py)
        for capture in captures_under(args.root, args.scenes):
            scene = corrected(capture, Path(fixes))
            protocol = scene_protocol(scene)
            if protocol is None:
                continue
            for n in [int(v) for v in args.views.split(",")]:
                for name, preset, overrides in variants:
                    cfg = load_config(preset, {**overrides, **protocol["overrides"], "views.count": n})
                    row: dict = {"scene": scene.name, "views": n, "variant": name}
                    start = time.perf_counter()
                    with tempfile.TemporaryDirectory() as tmp:
                        graph = run_scene(scene, cfg, Path(tmp), until="init").graph
                        init = graph.nodes[metrics_id("init")].values
                        row.update(init=init.get("source"), stereo=init.get("mvs"))
                        cloud = graph.get(POINTS_MVS, PointCloud)
                        if protocol["masks"] and cloud is not None and cloud.points is not None:
                            row.update(silhouette_scores(graph, cloud.points, args.slack))
                    row["seconds"] = time.perf_counter() - start
                    record(report, row, None, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
