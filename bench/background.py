"""The training background on the bundled example: recon's default behind black or a random colour.

The bundled example is a synthetic DTU-style scan, an object on a featureless black backdrop, trained without
its masks. Behind a random colour every pixel of a photo must be covered by splats; this records what that does
where nothing in the backdrop ties those splats to a depth. Each (background, views, seed) runs the default preset
up to the optimize stage (held-out views scored there) and records masked and whole-image PSNR. Prints one JSON
line per run and writes the report.

    python bench/background.py --views 3,6 --seeds 0,1 --out bench/results/background-example-h200.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from optimize import environment  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", default="3,6")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--backgrounds", default="black,random")
    ap.add_argument("--set", action="append", default=[], help="section.key=value for every run")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from recon.config import load_config, parse_override
    from recon.pipeline import run_scene
    from recon.resources import DATA_DIR

    common = dict(parse_override(s) for s in args.set)
    runs = []
    for views in map(int, args.views.split(",")):
        for background in args.backgrounds.split(","):
            for seed in map(int, args.seeds.split(",")):
                overrides = {**common, "views.count": views, "optimize.background": background, "seed": seed}
                with tempfile.TemporaryDirectory() as tmp:
                    graph = run_scene(DATA_DIR / "example", load_config("default", overrides), Path(tmp),
                                      until="optimize").graph
                m = graph.nodes["metrics/optimize"].values
                row = {"views": views, "background": background, "seed": seed, "steps": m["steps"],
                       **{k: m.get(k) for k in ("psnr", "psnr_masked", "ssim_masked", "gaussians", "backend",
                                                "resolution", "train_seconds")}}
                runs.append(row)
                print(json.dumps(row), flush=True)
    summary = []
    for views in sorted({r["views"] for r in runs}):
        for background in args.backgrounds.split(","):
            rows = [r for r in runs if r["views"] == views and r["background"] == background]
            summary.append({"views": views, "background": background, "runs": len(rows),
                            "psnr_masked": [round(r["psnr_masked"], 2) for r in rows],
                            "psnr_masked_mean": round(statistics.mean(r["psnr_masked"] for r in rows), 2),
                            "psnr_mean": round(statistics.mean(r["psnr"] for r in rows), 2)})
    report = {"benchmark": "background-example", "environment": environment(), "overrides": common, "runs": runs,
              "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
