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
from optimize import environment  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--scenes", default="")
    ap.add_argument("--views", default="3,9")
    ap.add_argument("--kinds", default="3dgs,2dgs")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--dense", action=argparse.BooleanOptionalAction, default=True, help="also run with every view")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    progress.set_enabled(False)
    wanted = set(filter(None, args.scenes.split(",")))
    scenes = sorted(p.parent for p in args.data.rglob("cameras.npz") if not wanted or p.parent.name in wanted)
    common = dict(parse_override(s) for s in args.set)
    runs: list[dict] = []
    report = {"benchmark": "mesh", "environment": environment(), "preset": args.preset, "overrides": common, "runs": runs}
    with tempfile.TemporaryDirectory() as tmp:
        for scene in scenes:
            counts = [int(v) for v in args.views.split(",")]
            if args.dense:
                counts.append(len(import_scene(scene).views()))
            for kind in args.kinds.split(","):
                for n in counts:
                    cfg = load_config(args.preset, {**common, "views.count": n, "optimize.kind": kind})
                    row = {"scene": scene.name, "views": n, "kind": kind}
                    try:
                        graph = run_scene(scene, cfg, Path(tmp), name=f"{scene.name}-{kind}-{n}").graph
                        m = graph.nodes["metrics/mesh"].values
                        g = m.get("geometry", {})
                        row.update(chamfer=g.get("chamfer"), accuracy=g.get("accuracy"), completeness=g.get("completeness"),
                                   fscore=g.get("fscore"), faces=m["faces"], mesh_seconds=graph.stages["mesh"].seconds,
                                   optimize_seconds=graph.stages["optimize"].seconds)
                    except Exception as exc:  # a failed run is a result too
                        row["error"] = f"{type(exc).__name__}: {exc}"
                    runs.append(row)
                    print(json.dumps(row), flush=True)
                    report["summary"] = summarise(runs)
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for row in report.get("summary", []):
        print(json.dumps(row))
    return 0


def summarise(runs: list[dict]) -> list[dict]:
    """Mean Chamfer and seconds per (kind, views), and each sparse mean over the dense mean of the same scenes."""
    ok = [r for r in runs if r.get("chamfer") is not None]
    dense = {(r["scene"], r["kind"]): r["chamfer"] for r in ok if r["views"] == max(x["views"] for x in ok if x["scene"] == r["scene"])}
    rows = []
    for kind in sorted({r["kind"] for r in ok}):
        for n in sorted({r["views"] for r in ok if r["kind"] == kind}):
            sel = [r for r in ok if r["kind"] == kind and r["views"] == n]
            ratio = [r["chamfer"] / dense[(r["scene"], kind)] for r in sel if (r["scene"], kind) in dense]
            rows.append({"kind": kind, "views": n, "scenes": len(sel), "chamfer": float(np.mean([r["chamfer"] for r in sel])),
                         "chamfer_over_dense": float(np.mean(ratio)) if ratio else None,
                         "mesh_seconds": float(np.mean([r["mesh_seconds"] for r in sel]))})
    return rows


if __name__ == "__main__":
    sys.exit(main())
