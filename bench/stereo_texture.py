"""Stereo's coverage over the pixels it can score: how much of each training view has texture at the size a CUDA run
matches at, and, from the depths recorded by earlier bench/real.py reports, the share of those pixels stereo kept.

init.mvs_min_coverage compares stereo's coverage with a share. Counted over the whole photo, an object before a
featureless backdrop covers little even where stereo is right (stereo scores no flat patch); counted over the pixels
with texture (recon.geometry.mvs.textured, what init counts), it measures how much of what stereo could match it
kept. The texture of a view needs no stereo, so this runs on the CPU in seconds; the kept shares come from the
reports (``stereo_kept``, the share of the whole image, from runs with the default's stereo and without masks in
training), matched by capture, view count and training views. Prints one JSON line per capture and view count.

    python bench/stereo_texture.py --root ../shared/realdata --views 3,4 \\
        --reports bench/results/real-ablation-19-h200.json --out bench/results/stereo-texture-cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from captures import captures_under, corrected  # noqa: E402
from optimize import environment, record  # noqa: E402
from real import DEFAULT_ROOT, scene_protocol  # noqa: E402

STEREO_KEYS = ("init.mvs_min_coverage", "init.mvs_min_confirmed", "poses.given_points", "seed")  # leave stereo be


def kept_shares(reports: list[Path]) -> dict[tuple[str, int, tuple[int, ...]], list[dict]]:
    """(capture, views, sorted training view indices) -> the distinct kept shares (in the order of the views' indices)
    of the reports' runs that ran the default's stereo on the whole image, each with where it came from."""
    found: dict[tuple[str, int, tuple[int, ...]], list[dict]] = {}
    for path in reports:
        report = json.loads(path.read_text())
        calls = report.get("calls", [report])  # a round of several calls, or one bench/real.py report
        variants = {(call.get("call"), name): (v, {**report.get("common_overrides", {}),
                                                   **call.get("common_overrides", {})})
                    for call in calls for name, v in call.get("variants", {}).items()}
        for run in report["runs"]:
            spec, common = variants.get((run.get("call"), run.get("source_variant", run["variant"])), (None, {}))
            if (not run.get("stereo_kept") or spec is None or spec["preset"] not in ("default", "llff", "dtu")
                    or any(k not in STEREO_KEYS for k in {**common, **spec["overrides"]})):
                continue
            key = (run["scene"], run["views"], tuple(sorted(run.get("train_views") or ())))
            rows = found.setdefault(key, [])
            if all(r["kept"] != run["stereo_kept"] for r in rows):
                rows.append({"kept": run["stereo_kept"], "report": path.name, "call": run.get("call"),
                             "variant": run["variant"]})
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, action="append", help="a folder of captures (repeatable)")
    ap.add_argument("--scenes", default="", help="comma-separated folder names (default: every capture)")
    ap.add_argument("--views", default="3,4")
    ap.add_argument("--reports", type=Path, nargs="*", default=[], help="bench/real.py reports with stereo_kept")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()

    import torch

    from recon.config import load_config
    from recon.geometry import mvs
    from recon.pipeline import run_scene
    from recon.stages.init import stereo_frames, stereo_settings

    shares = kept_shares(args.reports)
    report: dict = {"benchmark": "stereo-texture", "environment": environment(), "note": args.note,
                    "reports": [p.name for p in args.reports], "runs": []}
    with tempfile.TemporaryDirectory() as fixes:
        for root in args.root or [DEFAULT_ROOT]:
            for capture in captures_under(root, args.scenes):
                scene = corrected(capture, Path(fixes))
                protocol = scene_protocol(scene)
                if protocol is None:
                    continue
                for n in [int(v) for v in args.views.split(",")]:
                    cfg = load_config("default", {**protocol["overrides"], "views.count": n})
                    with tempfile.TemporaryDirectory() as tmp:
                        graph = run_scene(scene, cfg, Path(tmp), until="views").graph
                        train = graph.views("train")
                        frames = stereo_frames(graph, train, cfg.init.mvs_max_side)  # the size a CUDA run matches at
                        with torch.no_grad():
                            textured = mvs.textured(frames.training_images(), stereo_settings(cfg.init))
                        textured = textured.flatten(1).float().mean(1)
                        indices = tuple(v.index for v in train)  # the order of the views' depths and shares
                    row: dict = {"scene": scene.name, "views": n, "train_views": list(indices),
                                 "resolution": [frames.width, frames.height],
                                 "textured_share": [round(float(t), 4) for t in textured], "from_reports": []}
                    for source in shares.get((scene.name, n, tuple(sorted(indices))), []):
                        kept = source["kept"]
                        of_textured = [min(1.0, k / t) for k, t in zip(kept, row["textured_share"]) if t > 0]
                        source = {**source, "coverage_of_image": round(statistics.mean(kept), 4),
                                  "coverage_of_textured": round(statistics.mean(of_textured), 4) if of_textured
                                  else 0.0}
                        row["from_reports"].append(source)
                    record(report, row, None, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
