"""Benchmark the poses stage: registration, pose errors and AUC from a few views, with and without joint refinement.

For every scene under ``--data`` and every view count, the poses stage
estimates the training views' cameras (``poses.mode=estimate``, partial
registrations allowed so that the rate is measured) and scores them against
the given cameras. With ``--refine`` the pipeline goes on through the optimize
stage, once with the pose refinement on and once off, and records the refined
cameras' errors and the held-out views' PSNR (their given cameras carried into
the estimated frame). Structure from motion runs on the CPU.

    python bench/poses.py --data DIR --views 3,4,6,9 [--refine] --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from recon import progress
from recon.config import load_config, parse_override
from recon.pipeline import run_scene

sys.path.insert(0, str(Path(__file__).parent))
from optimize import environment, find_scenes, record  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--scenes", default="")
    ap.add_argument("--views", default="3,4,6,9")
    ap.add_argument("--refine", action="store_true", help="also run the optimize stage with and without pose refinement")
    ap.add_argument("--refine-modes", default="off,on", help="with --refine: the pose_refine settings to run")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    progress.set_enabled(False)
    warnings.simplefilter("ignore")
    scenes = find_scenes(args.data, args.scenes)
    common = dict(parse_override(s) for s in args.set)
    report = {"benchmark": "poses", "environment": environment(), "preset": args.preset, "overrides": common, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for scene in scenes:
            for n in [int(v) for v in args.views.split(",")]:
                base = {**common, "views.count": n, "poses.mode": "estimate", "poses.allow_partial": True}
                for refine in (args.refine_modes.split(",") if args.refine else [None]):
                    settings = base if refine is None else {**base, "optimize.pose_refine": refine}
                    row = {"scene": scene.name, "views": n, "refine": refine}
                    row.update(measure(scene, load_config(args.preset, settings), Path(tmp), f"{scene.name}-{n}",
                                       "poses" if refine is None else "optimize"))
                    record(report, row, summarise, args.out)
    for row in report.get("summary", []):
        print(json.dumps(row))
    return 0


def measure(scene: Path, cfg, out_root: Path, name: str, until: str) -> dict:
    try:
        graph = run_scene(scene, cfg, out_root, name=name, until=until).graph
    except Exception as exc:  # nothing registered (or another failure) is a result too
        return {"registered": 0, "error": f"{type(exc).__name__}: {exc}"}
    p = graph.nodes["metrics/poses"].values
    row = {"registered": p["registered"], "sfm_seconds": p["seconds"], "sfm_points": p["sfm_points"]}
    if "against_given" in p:
        row.update(pose_row(p["against_given"], "sfm"))
    if until == "optimize":
        o = graph.nodes["metrics/optimize"].values
        row.update(psnr=o.get("psnr"), psnr_masked=o.get("psnr_masked"), test_views=o.get("test_views"),
                   optimize_seconds=graph.stages["optimize"].seconds)
        if "unaligned" in o:  # held-out cameras fitted to their photos before scoring; the raw scores beside
            row.update(psnr_masked_unaligned=o["unaligned"].get("psnr_masked"), psnr_unaligned=o["unaligned"].get("psnr"),
                       test_pose_change_deg=o["test_pose_align"]["rotation_change_deg"],
                       test_pose_change_rel=o["test_pose_align"]["translation_change"])
        after = o.get("poses", {}).get("against_given_after")
        if after:
            row.update(pose_row(after, "refined"))
    return row


def pose_row(errors: dict, prefix: str) -> dict:
    return {f"{prefix}_rotation_deg": errors["rotation_error_deg"]["mean"],
            f"{prefix}_translation_rel": errors["translation_error_relative"],
            f"{prefix}_auc": errors["auc"]}


def summarise(runs: list[dict]) -> list[dict]:
    """Per (views, refine): registration rate over the scenes, mean errors where the poses were scored."""
    rows = []
    for key in sorted({(r["views"], r["refine"] or "") for r in runs}):
        sel = [r for r in runs if (r["views"], r["refine"] or "") == key]
        scored = [r for r in sel if "sfm_rotation_deg" in r]
        row = {"views": key[0], "refine": key[1] or None, "scenes": len(sel),
               "registration_rate": float(np.mean([r["registered"] / key[0] for r in sel])),
               "fully_registered": sum(r["registered"] == key[0] for r in sel), "scored": len(scored)}
        for prefix in ("sfm", "refined"):
            have = [r for r in scored if f"{prefix}_rotation_deg" in r]
            if have:
                row[f"{prefix}_rotation_deg"] = float(np.mean([r[f"{prefix}_rotation_deg"] for r in have]))
                row[f"{prefix}_translation_rel"] = float(np.mean([r[f"{prefix}_translation_rel"] for r in have]))
                row[f"{prefix}_auc"] = {t: float(np.mean([r[f"{prefix}_auc"][t] for r in have])) for t in ("5", "10", "20")}
        seconds = [r["sfm_seconds"] for r in sel if "sfm_seconds" in r]
        if seconds:
            row["sfm_seconds"] = float(np.mean(seconds))
        for key in ("psnr_masked", "psnr_masked_unaligned", "test_pose_change_deg"):
            values = [r[key] for r in sel if r.get(key) is not None]
            if values:
                row[key] = float(np.mean(values))
        rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(main())
