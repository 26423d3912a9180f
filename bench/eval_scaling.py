"""Benchmark `recon eval --ray` across the GPUs of one machine: the same scenes in turn on one GPU, then one per GPU.

Renders ``--scenes`` synthetic scenes (``recon data synth``, shapes and seeds in turn) unless ``--data`` has them,
builds gsplat's kernels once, then evaluates them twice: in this process on GPU 0 (``CUDA_VISIBLE_DEVICES=0``,
in a child process so that the setting holds), and with ``--ray`` on a local Ray cluster over every GPU, one scene
per GPU. Reports both wall times, the throughput ratio against ``--target`` (1.8 on 2 GPUs), and whether every
scene's metrics agree between the two.

    python bench/eval_scaling.py --scenes 8 --views 3 --work /tmp/scaling --out bench/results/eval-scaling-2xh200.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from optimize import environment  # noqa: E402


def make_scenes(data: Path, count: int) -> None:
    """At least ``count`` synthetic scenes under ``data``: those there are kept, more made (each shape, then each
    shape again with the next seed) until there are enough."""
    from recon.data.shapes import SHAPES
    from recon.data.synth import SynthSpec, synthesize

    shapes = list(SHAPES)
    have = len(list(data.glob("*/gt/scene.json")))
    i = 0
    while have < count:
        folder = data / f"{shapes[i % len(shapes)]}-{i // len(shapes)}"
        if not (folder / "gt" / "scene.json").is_file():
            synthesize(folder, SynthSpec(shapes[i % len(shapes)], seed=i // len(shapes)), force=True)
            have += 1
        i += 1


def evaluate(data: Path, out: Path, views: int, ray: bool, env: dict[str, str]) -> float:
    """Wall seconds of ``recon eval synthetic`` over ``data`` into ``out`` (a fresh folder)."""
    command = [sys.executable, "-m", "recon", "eval", "synthetic", "--root", str(data), "--views", str(views),
               "--out", str(out), "--force"] + (["--ray"] if ray else [])
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    return time.perf_counter() - start


def metrics(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()).get("metrics") for p in sorted((out / "scenes").glob("*.json"))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=8, help="at least this many (every scene under --data runs)")
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--data", type=Path, help="synthetic scenes (made here if missing)")
    ap.add_argument("--work", type=Path, required=True, help="where the two evaluations write")
    ap.add_argument("--target", type=float, default=1.8, help="throughput ratio to reach on 2 GPUs")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import torch

    from recon.render import compile_kernels

    gpus = torch.cuda.device_count()
    data = args.data or args.work / "scenes"
    make_scenes(data, args.scenes)
    compile_seconds = compile_kernels()
    one_gpu = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}
    in_turn = evaluate(data, args.work / "in-turn", args.views, ray=False, env=one_gpu)
    on_ray = evaluate(data, args.work / "ray", args.views, ray=True, env=dict(os.environ))
    a, b = metrics(args.work / "in-turn"), metrics(args.work / "ray")
    differ = sorted(name for name in a if a[name] != b.get(name))
    gaps = {name: abs(a[name]["psnr"] - b[name]["psnr"]) for name in a
            if isinstance(a[name], dict) and isinstance(b.get(name), dict) and "psnr" in a[name] and "psnr" in b[name]}
    ratio = in_turn / on_ray
    report = {"environment": {**environment(), "gpus": gpus, "gsplat_compile_seconds": compile_seconds},
              "scenes": len(a), "views": args.views, "sequential_one_gpu_seconds": in_turn,
              "ray_seconds": on_ray, "throughput_ratio": ratio,
              "target": {"ratio": args.target, "gpus": 2, "met": gpus >= 2 and ratio >= args.target},
              "metrics_identical": not differ, "scenes_that_differ": differ,
              # gsplat's backward pass adds gradients atomically, so two CUDA runs of one scene can part by a little
              "psnr_gap_max": max(gaps.values(), default=None), "psnr_gap_per_scene": gaps,
              "ray": json.loads((args.work / "ray" / "ray.json").read_text())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
