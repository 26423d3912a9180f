"""Benchmark the mesh stage: Chamfer and F-score of recon's meshes on synthetic scenes, and the stage's seconds.

For every scene under ``--data``, every view count and every kind (3dgs, 2dgs),
runs the pipeline through the mesh stage and records the geometry metrics
against the scene's ground-truth points (dataset units, which are
millimetre-like for ``recon data synth`` scenes), the mesh stage's seconds and
the optimize stage's. A run with every view of the scene (``--dense``) gives
the reference the sparse runs are compared with.

    python bench/mesh.py --data DIR --views 3,9 --kinds 3dgs,2dgs --out FILE
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from recon import progress
from recon.config import load_config, parse_override
from recon.io import import_scene
from recon.pipeline import run_scene

sys.path.insert(0, str(Path(__file__).parent))
from optimize import environment, find_scenes, record  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--scenes", default="")
    ap.add_argument("--views", default="3,9")
    ap.add_argument("--kinds", default="3dgs,2dgs")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--dense", action=argparse.BooleanOptionalAction, default=True, help="also run with every view")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:key=value,key=value -- mesh settings tried on the same optimised splats "
                         "(the mesh stage reruns alone)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    progress.set_enabled(False)
    scenes = find_scenes(args.data, args.scenes)
    common = dict(parse_override(s) for s in args.set)
    variants = {"base": {}}
    for text in args.variant:
        label, _, settings = text.partition(":")
        variants[label] = dict(parse_override(s) for s in settings.split(",") if s)
    report = {"benchmark": "mesh", "environment": environment(), "preset": args.preset, "overrides": common,
              "variants": variants, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for scene in scenes:
            counts = [int(v) for v in args.views.split(",")]
            if args.dense:
                counts.append(len(import_scene(scene).views()))
            for kind in args.kinds.split(","):
                for n in counts:
                    for label, extra in variants.items():
                        row = {"scene": scene.name, "views": n, "kind": kind, "variant": label}
                        cfg = load_config(args.preset, {**common, **extra, "views.count": n, "optimize.kind": kind})
                        row.update(measure(scene, cfg, Path(tmp), f"{scene.name}-{kind}-{n}"))
                        record(report, row, summarise, args.out)
    for row in report.get("summary", []):
        print(json.dumps(row))
    return 0


def measure(scene: Path, cfg, out_root: Path, name: str) -> dict:
    """Run (or resume) the pipeline through the mesh stage; the mesh metrics and stage seconds."""
    try:
        graph = run_scene(scene, cfg, out_root, name=name).graph
    except Exception as exc:  # a failed run is a result too
        return {"error": f"{type(exc).__name__}: {exc}"}
    m = graph.nodes["metrics/mesh"].values
    g = m.get("geometry", {})
    return {"chamfer": g.get("chamfer"), "accuracy": g.get("accuracy"), "completeness": g.get("completeness"),
            "fscore": g.get("fscore"), "faces": m["faces"], "mesh_seconds": graph.stages["mesh"].seconds,
            "optimize_seconds": graph.stages["optimize"].seconds}


def summarise(runs: list[dict]) -> list[dict]:
    """Mean Chamfer and seconds per (variant, kind, views), and each sparse run over the densest run of its scene."""
    ok = [r for r in runs if r.get("chamfer") is not None]
    most = {r["scene"]: max(x["views"] for x in ok if x["scene"] == r["scene"]) for r in ok}
    dense = {(r["scene"], r["kind"], r["variant"]): r["chamfer"] for r in ok if r["views"] == most[r["scene"]]}
    rows = []
    for key in sorted({(r["variant"], r["kind"], r["views"]) for r in ok}):
        sel = [r for r in ok if (r["variant"], r["kind"], r["views"]) == key]
        ratio = [r["chamfer"] / dense[(r["scene"], r["kind"], r["variant"])] for r in sel
                 if (r["scene"], r["kind"], r["variant"]) in dense]
        rows.append({"variant": key[0], "kind": key[1], "views": key[2], "scenes": len(sel),
                     "chamfer": float(np.mean([r["chamfer"] for r in sel])),
                     "fscore": {t: float(np.mean([r["fscore"][t] for r in sel])) for t in sel[0]["fscore"]},
                     "chamfer_over_dense": float(np.mean(ratio)) if ratio else None,
                     "mesh_seconds": float(np.mean([r["mesh_seconds"] for r in sel])),
                     "optimize_seconds": float(np.mean([r["optimize_seconds"] for r in sel]))})
    return rows


if __name__ == "__main__":
    sys.exit(main())
