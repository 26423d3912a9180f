"""Benchmark `recon eval synthetic`: every scene under --data end to end (poses given), wall time per scene.

gsplat compiles its kernels on first use (about 90 s on a fresh machine); that
is done and timed before the evaluation so that scene times are the work of
recon alone. Writes the evaluation's own folder (tables, plots, per-scene JSON)
to --out and a report with the environment to --report.

    python bench/eval_synthetic.py --data DIR --views 3 --out results/eval --report bench/results/eval-synthetic.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from optimize import environment  # noqa: E402

from recon import progress  # noqa: E402
from recon.eval import suites  # noqa: E402
from recon.eval.runner import EvalOptions, run_suite  # noqa: E402
from recon.eval.tables import write_aggregates  # noqa: E402
from recon.render import compile_kernels  # noqa: E402

TARGET_SECONDS = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--config", default="default")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    progress.set_enabled(False)
    compile_seconds = compile_kernels()
    suite = suites.synthetic(args.data, args.views, args.config)
    start = time.perf_counter()
    results = run_suite(suite, EvalOptions(args.out, device="auto"))
    wall = time.perf_counter() - start
    summary = write_aggregates(args.out, f"recon on synthetic ({args.views}v, preset {args.config})", results,
                               None, args.views, suite.protocol)
    per_scene = {r["scene"]: {"seconds": r.get("seconds"), "stages": r.get("stages"), **r.get("metrics", {})}
                 for r in results if r.get("status") == "ok"}
    seconds = [v["seconds"] for v in per_scene.values()]
    report = {
        "environment": environment(), "views": args.views, "preset": args.config, "scenes": len(results),
        "ok": summary["ok"], "failed": summary["failed"], "gsplat_compile_seconds": compile_seconds,
        "total_seconds": wall, "max_scene_seconds": max(seconds) if seconds else None,
        "mean_scene_seconds": sum(seconds) / len(seconds) if seconds else None,
        "target_scene_seconds": TARGET_SECONDS,
        "target_met": bool(seconds) and max(seconds) <= TARGET_SECONDS and not summary["failed"],
        "mean": summary["mean"], "per_scene": per_scene, "table": (args.out / "table.md").read_text(),
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("per_scene", "table")}))
    return 0 if not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
