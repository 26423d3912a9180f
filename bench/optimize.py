"""Benchmark the optimize stage: recon's preset against plain 3DGS on synthetic scenes.

For every scene folder under ``--data`` (made by ``recon data synth``), every
view count and every variant (``NAME=PRESET[,section.key=value...]``), runs
the pipeline up to the optimize stage on the same views and the same init,
and records masked PSNR/SSIM on the held-out views, the optimize stage's
seconds, its peak GPU memory and the number of splats. Prints one JSON line
per run as it finishes, then a summary, and writes everything to ``--out``.

    python bench/optimize.py --data DIR --views 3,6,9 --variant recon=default --variant plain=plain --out FILE
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recon import progress
from recon.config import load_config, parse_override
from recon.pipeline import run_scene
from recon.render import compile_kernels


def parse_variant(text: str) -> tuple[str, str, dict]:
    name, _, spec = text.partition("=")
    preset, *sets = spec.split(",") if spec else ("default",)
    return name, preset, dict(parse_override(s) for s in sets)


def find_scenes(data: Path, names: str) -> list[Path]:
    """Scene folders under ``data`` (those with a cameras.npz), only the comma-separated ``names`` if given."""
    wanted = set(filter(None, names.split(",")))
    return sorted(p.parent for p in data.rglob("cameras.npz") if not wanted or p.parent.name in wanted)


def record(report: dict, row: dict, summarise, out: Path) -> None:
    """Add one run's row to the report, print it, and rewrite the report (with a fresh summary unless ``summarise``
    is None)."""
    report["runs"].append(row)
    print(json.dumps(row), flush=True)
    if summarise is not None:
        report["summary"] = summarise(report["runs"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


def environment() -> dict:
    import gsplat
    import torch

    return {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "torch": torch.__version__, "gsplat": gsplat.__version__, "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def summarise(runs: list[dict]) -> list[dict]:
    """Means per (resolution, views, variant), and each variant's gain over the first."""
    rows = []
    keys = sorted({(r["resolution"], r["views"]) for r in runs})
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    for res, views in keys:
        for variant in variants:
            sel = [r for r in runs
                   if (r["resolution"], r["views"], r["variant"]) == (res, views, variant) and "error" not in r]
            if not sel:
                continue

            def mean(k: str, sel: list[dict] = sel) -> float | None:
                have = [r[k] for r in sel if r.get(k) is not None]
                return float(np.mean(have)) if have else None
            rows.append({"resolution": res, "views": views, "variant": variant, "scenes": len(sel),
                         "psnr_masked": mean("psnr_masked"), "ssim_masked": mean("ssim_masked"), "psnr": mean("psnr"),
                         "seconds": mean("seconds"), "peak_memory_mb": mean("peak_memory_mb"),
                         "gaussians": mean("gaussians")})
    base = variants[-1] if len(variants) > 1 else None
    score = {(r["resolution"], r["views"], r["variant"], r["scene"]): r.get("psnr_masked")
             for r in runs if "error" not in r}
    for row in rows:
        # Paired: only the scenes on which both this variant and the baseline ran.
        pairs = [(v, score.get((res, n, base, scene))) for (res, n, var, scene), v in score.items()
                 if (res, n, var) == (row["resolution"], row["views"], row["variant"])]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if base is not None and pairs:
            row[f"psnr_masked_gain_over_{base}"] = float(np.mean([a - b for a, b in pairs]))
            row["paired_scenes"] = len(pairs)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True,
                    help="folder of synthetic scenes (or of resolution folders of them)")
    ap.add_argument("--scenes", default="", help="comma-separated scene names (default: all)")
    ap.add_argument("--views", default="3,6,9")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=PRESET[,section.key=value...]; the last is the baseline")
    ap.add_argument("--set", action="append", default=[], help="section.key=value for every variant")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    progress.set_enabled(False)
    variants = [parse_variant(v) for v in (args.variant or ["recon=default", "plain=plain"])]
    common = dict(parse_override(s) for s in args.set)
    scenes = find_scenes(args.data, args.scenes)
    compile_seconds = compile_kernels()  # gsplat's JIT compile, kept out of the first run's seconds
    report = {"benchmark": "optimize", "environment": {**environment(), "gsplat_compile_seconds": compile_seconds},
              "note": args.note,
              "variants": {n: {"preset": p, "overrides": o} for n, p, o in variants}, "common_overrides": common,
              "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for scene in scenes:
            for n in [int(v) for v in args.views.split(",")]:
                for name, preset, overrides in variants:
                    cfg = load_config(preset, {**common, **overrides, "views.count": n, "device": "auto"})
                    row = {"scene": scene.name, "views": n, "variant": name}
                    try:
                        result = run_scene(scene, cfg, Path(tmp), name=f"{scene.parent.name}-{scene.name}-{n}-{name}",
                                           until="optimize")
                        m = result.graph.nodes["metrics/optimize"].values
                        row.update({k: m.get(k) for k in ("psnr_masked", "ssim_masked", "psnr", "ssim", "gaussians",
                                                           "peak_memory_mb", "train_seconds", "backend")})
                        row["resolution"] = "x".join(map(str, m["resolution"]))
                        row["seconds"] = result.graph.stages["optimize"].seconds
                        row["init"] = result.graph.nodes["metrics/init"].values["source"]
                    except Exception as exc:  # a failed run is a result too
                        row.update(error=f"{type(exc).__name__}: {exc}", resolution="?")
                    record(report, row, summarise, args.out)
    for row in report["summary"]:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
