"""Benchmark the prior stage: held-out quality and seconds with the prior off and on, same views, same seeds.

For every scene folder under ``--data`` (made by ``recon data synth``) and
every view count, runs the pipeline up to the optimize stage, then the prior
stage on the same output folder, so both scores come from the same optimised
splats: "off" is the optimize stage's masked PSNR/SSIM on the held-out views,
"on" the prior stage's (the same as "off" where the prior's check turned it
down, which ``applied`` records). Prints one JSON line per run, then a summary (mean and
worst gain per view count, the prior's extra seconds), and writes everything
to ``--out``.

    python bench/prior.py --data DIR --views 3,4,6 [--scenes a,b] [--set prior.key=value ...] [--ungated] --out FILE
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from recon import progress
from recon.config import load_config, parse_override
from recon.pipeline import run_scene
from recon.render import compile_kernels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optimize import environment, find_scenes, record  # noqa: E402

KEYS = ("psnr_masked", "ssim_masked", "psnr", "ssim")


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for views in sorted({r["views"] for r in runs}):
        sel = [r for r in runs if r["views"] == views and "error" not in r]
        if not sel:
            continue
        gains = [r["gain"] for r in sel]
        rows.append({
            "views": views, "scenes": len(sel),
            "psnr_masked_off": float(np.mean([r["off"]["psnr_masked"] for r in sel])),
            "psnr_masked_on": float(np.mean([r["on"]["psnr_masked"] for r in sel])),
            "ssim_masked_off": float(np.mean([r["off"]["ssim_masked"] for r in sel])),
            "ssim_masked_on": float(np.mean([r["on"]["ssim_masked"] for r in sel])),
            "psnr_masked_gain_mean": float(np.mean(gains)), "psnr_masked_gain_min": float(np.min(gains)),
            "applied": sum(bool(r.get("applied", True)) for r in sel),
            **_ungated(sel),
            "prior_seconds_mean": float(np.mean([r["prior_seconds"] for r in sel])),
            "prior_seconds_max": float(np.max([r["prior_seconds"] for r in sel])),
        })
    return rows


def _ungated(runs: list[dict]) -> dict:
    """The gains without the check, where every run that the check turned down was run again without it."""
    gains = [r["ungated"]["gain"] if "ungated" in r else r["gain"] for r in runs
             if r.get("applied", True) or "ungated" in r]
    if len(gains) < len(runs):
        return {}
    return {"psnr_masked_gain_ungated_mean": float(np.mean(gains)),
            "psnr_masked_gain_ungated_min": float(np.min(gains))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder of synthetic scenes")
    ap.add_argument("--scenes", default="", help="comma-separated scene names (default: all)")
    ap.add_argument("--views", default="3,4,6")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", action="append", default=[],
                    help="section.key=value (prior.* settings apply to the 'on' run)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="")
    ap.add_argument("--ungated", action="store_true",
                    help="where the prior's check turns it down, run it again without the check and record that too")
    args = ap.parse_args()
    progress.set_enabled(False)
    overrides = dict(parse_override(s) for s in args.set)
    scenes = find_scenes(args.data, args.scenes)
    compile_seconds = compile_kernels()
    report = {"benchmark": "prior", "environment": {**environment(), "gsplat_compile_seconds": compile_seconds},
              "preset": args.preset, "overrides": overrides, "note": args.note, "runs": [], "summary": []}
    with tempfile.TemporaryDirectory() as tmp:
        for views in [int(v) for v in args.views.split(",")]:
            for scene in scenes:
                name = f"{scene.name}-{views}"
                row = {"scene": scene.name, "views": views}
                try:
                    off_cfg = load_config(args.preset, {**overrides, "views.count": views, "prior.enabled": False})
                    off = run_scene(scene, off_cfg, Path(tmp), name=name, until="optimize").graph
                    on_cfg = load_config(args.preset, {**overrides, "views.count": views, "prior.enabled": True})
                    result = run_scene(scene, on_cfg, Path(tmp), name=name, until="prior")
                    assert result.outcomes[4].status == "reused", "the optimize stage must be shared by both runs"
                    graph = result.graph
                    o, p = off.nodes["metrics/optimize"].values, graph.nodes["metrics/prior"].values
                    off_values = {k: o.get(k) for k in KEYS}
                    # When its check fails the prior is not applied: the scene keeps the optimize stage's splats.
                    row.update(off=off_values, on={k: p.get(k) for k in KEYS} if p["applied"] else off_values,
                               applied=p["applied"], validation=p.get("validation"),
                               optimize_seconds=off.stages["optimize"].seconds,
                               prior_seconds=graph.stages["prior"].seconds, prior_parts=p["seconds"],
                               pairs=p["pairs"], model=p["model"], pseudo_views=p.get("pseudo_views"),
                               gaussians_off=o["gaussians"], gaussians_on=p.get("gaussians", o["gaussians"]),
                               resolution=o["resolution"])
                    row["gain"] = row["on"]["psnr_masked"] - row["off"]["psnr_masked"]
                    if args.ungated and not p["applied"]:  # what the check turned down
                        ungated_cfg = load_config(args.preset,
                                                  {**overrides, "views.count": views, "prior.enabled": True,
                                                                "prior.validate": False})
                        u = run_scene(scene, ungated_cfg, Path(tmp), name=name, until="prior").graph
                        u = u.nodes["metrics/prior"].values
                        row["ungated"] = {**{k: u.get(k) for k in KEYS},
                                          "gain": u["psnr_masked"] - row["off"]["psnr_masked"]}
                except Exception as exc:  # keep the other scenes going
                    row["error"] = f"{type(exc).__name__}: {exc}"
                record(report, row, summarise, args.out)
    for line in report["summary"]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
