"""Where a training step's time goes: torch.profiler over steps of the optimize stage.

    python bench/profile_optimize.py --scene DIR --views 3 [--preset default] [--steps 300] [--set k=v ...]

Runs the pipeline to the init stage, then ``--steps`` optimisation steps with
the profiler on the last 50, and prints the operators that took the most time
and the mean milliseconds per step, with the profiler and without it (the last warm-up steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from recon import progress
from recon.config import load_config, parse_override
from recon.devices import resolve_device
from recon.io import ply
from recon.optim.trainer import Trainer
from recon.pipeline import run_scene
from recon.render.splats import init_splats
from recon.scene.frames import load_frames, scene_bounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=Path, required=True)
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    progress.set_enabled(False)
    cfg = load_config(args.preset, {**dict(parse_override(s) for s in args.set), "views.count": args.views})
    with tempfile.TemporaryDirectory() as tmp:
        graph = run_scene(args.scene, cfg, Path(tmp), until="init").graph
        device = resolve_device(cfg.device)
        train = graph.views("train")
        frames = load_frames(graph, train).to(device)
        center, radius = scene_bounds(graph, train)
        points, colors = ply.read_points(graph.resolve(graph.nodes["points/init"].path))
        oc = cfg.optimize.for_views(len(train))
        splats = init_splats(points, colors, oc.sh_degree, oc.kind, oc.init_scale, oc.init_opacity, device)
        trainer = Trainer(dataclasses.replace(oc, steps=args.steps + 50), frames, splats, center, radius, device,
                          cfg.seed)
        timed = min(100, args.steps // 2)  # the last of the warm-up steps, timed without the profiler
        for step in range(args.steps - timed):
            trainer.step(step, step % len(frames))
        torch.cuda.synchronize()
        start = time.perf_counter()
        for step in range(args.steps - timed, args.steps):
            trainer.step(step, step % len(frames))
        torch.cuda.synchronize()
        plain_per_step = (time.perf_counter() - start) / timed * 1000
        start = time.perf_counter()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            for step in range(args.steps, args.steps + 50):
                trainer.step(step, step % len(frames))
            torch.cuda.synchronize()
        per_step = (time.perf_counter() - start) / 50 * 1000
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15))
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25))
    print(json.dumps({"ms_per_step": plain_per_step, "ms_per_step_profiled": per_step,
                      "splats": int(len(trainer.splats["means"])), "overrides": args.set}))


if __name__ == "__main__":
    main()
