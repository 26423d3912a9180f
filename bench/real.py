"""Benchmark on real captures: every scene under --root at 3, 6 and 9 views, recon's presets against plain 3DGS.

Plain 3DGS runs twice: from random points (``plain``) and from SfM points (``plain_sfm``: the scene's own, or the
training views' matches triangulated with the given cameras), as published 3DGS baselines start.

Each scene is run under its protocol (../shared/realdata/SOURCES.md):

* DTU scans (the IDR layout, 49 views, a ``scan<N>`` name): the ids of data/splits/dtu.json, 400x300;
* LLFF captures (``poses_bounds.npy``): every 8th view held out, images 8x smaller than the photos;
* anything else: farthest-point training views, all the other views held out, the long side brought to
  about 512 pixels by an integer factor.

A capture with a known defect in its copy (castle_p30's rotations, stored transposed) is read through a
corrected copy (bench/captures.py).

Variants are ``NAME=PRESET[,section.key=value...]``; one built on the ``dtu`` preset runs on DTU scans only, one
built on ``object`` only where the scene has masks, and a variant whose resolved config equals an earlier one's
on a scene is recorded as the same run, not run again. Each run goes up to the optimize stage (held-out views
scored there) in its own folder; ``--jobs N`` runs N at a time on the same GPU, each in a process of its own, so
that one that crashes is its run's error alone (the per-stage seconds then include the sharing: ``jobs`` is in
the report). Runs whose settings agree up to the init stage (variants of optimize settings, one seed) start from
one shared run of those stages (under ``--work``'s ``.starts``), made once and copied into each run's folder,
where the pipeline reuses it: ``start`` in the rows that did (their init seconds and warnings are the start's;
``start_error`` where it failed and the run went on without it). Records PSNR, SSIM, LPIPS, both masked PSNRs
where masks exist and per held-out view, seconds per stage (and ``seconds``, their sum), peak GPU memory, splats,
what recon warned (a setting that did not apply, a fallback: numbered under the table), and for 3-view runs one
strip (photo | render | 4x absolute error) of the first held-out view in ``--images``. Prints one JSON line per
run, then the summary table in markdown.

    python bench/real.py --root ../shared/realdata --views 3,6,9 --jobs 8 --out bench/results/real-h200.json
    python bench/real.py --table bench/results/real-h200.json      # the markdown table of a report
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable
from multiprocessing import connection, get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from captures import captures_under, corrected  # noqa: E402
from optimize import environment, parse_variant  # noqa: E402

from recon.errors import first_line  # noqa: E402
from recon.render import compile_kernels  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "realdata"
DEFAULT_VARIANTS = ("plain=plain", "plain_sfm=plain_sfm", "default=default", "dtu=dtu",
                    "object=object")  # the last two where they apply
MAX_WARNINGS = 8  # per run, in the report
METRICS = ("psnr", "ssim", "lpips", "psnr_masked", "ssim_masked", "psnr_black", "ssim_black")
LONG_SIDE = 512
STRIP_WIDTH = 256  # each of photo, render and error in a strip, at most (integer down-sampling)
SHARED_UNTIL = "init"  # runs whose settings agree up to this stage share one run of the stages up to it
STARTS = ".starts"  # the shared runs' folder, under the runs' one


def scene_protocol(path: Path) -> dict | None:
    """{"kind", "overrides", "masks"} of a capture recon can import, or None for anything else."""
    from recon.errors import InputError
    from recon.io import ImportOptions, import_scene

    try:
        graph = import_scene(path, ImportOptions())
    except InputError:
        return None
    views = graph.views()
    masks = all(v.mask for v in views)
    layout = graph.source["layout"]
    if layout == "dtu-idr" and len(views) == 49 and re.search(r"scan\d+", path.name):
        width = graph.camera_of(views[0]).width
        return {"kind": "dtu", "overrides": {"views.split": "dtu", "data.downscale": max(1, round(width / 400))},
                "masks": masks}
    if layout == "llff":
        return {"kind": "llff", "overrides": {"views.split": "llff", "data.downscale": 8}, "masks": masks}
    cam = graph.camera_of(views[0])
    return {"kind": "farthest", "masks": masks,
            "overrides": {"views.split": None, "views.strategy": "farthest",
                          "data.downscale": max(1, round(max(cam.width, cam.height) / LONG_SIDE))}}


def applies(preset: str, protocol: dict) -> bool:
    if preset == "dtu":
        return protocol["kind"] == "dtu"
    if preset == "object":
        return protocol["masks"]
    return True


def run_one(scene: str, preset: str, overrides: dict, out_root: str, name: str, images: str | None,
            start: str | None = None) -> dict:
    """One run up to the optimize stage, in a worker process; never raises. ``start``: a folder holding the stages up
    to SHARED_UNTIL of the same settings (make_start), copied in first so that the run reuses them (``start`` in the
    row when it did; a folder already there is the pipeline's to reuse or redo)."""
    row: dict = {}
    folder = Path(out_root) / name
    if start is not None and not folder.exists():
        try:
            copy_folder(Path(start), folder)
        except OSError as exc:  # the run goes on without it
            row["start_error"] = f"not copied: {exc}"
    result, said = staged(scene, preset, overrides, out_root, name, "optimize")
    if isinstance(result, str):
        row["error"] = result
    else:
        if start is not None and any(o.name == SHARED_UNTIL and o.status == "reused" for o in result.outcomes):
            row["start"] = Path(start).name
        try:
            row.update(describe(result.graph))
            if images:
                row["image"] = write_strip(result.graph, Path(images) / f"{name}.png")
        except Exception as exc:  # a failed run is a result too
            row["error"] = f"{type(exc).__name__}: {exc}"
    if said:
        row["warnings"] = said
    return row


def copy_folder(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` under a temporary name first, so that an interrupted copy leaves no folder that
    looks finished."""
    partial = target.with_name(target.name + ".copying")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    partial.rename(target)


def make_start(scene: str, preset: str, overrides: dict, out_root: str, name: str) -> dict:
    """The stages up to SHARED_UNTIL, for runs that share them, in a worker process: {"warnings"} or {"error"}."""
    result, said = staged(scene, preset, overrides, out_root, name, SHARED_UNTIL)
    return {"warnings": said, **({"error": result} if isinstance(result, str) else {})}


def staged(scene: str, preset: str, overrides: dict, out_root: str, name: str, until: str):
    """Run the pipeline up to ``until`` in this process: (the result, or the error in one line; what recon
    warned)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from recon import progress
    from recon.config import load_config
    from recon.pipeline import run_scene

    torch.set_num_threads(1)
    progress.set_enabled(False)
    caught: list[warnings.WarningMessage] = []
    try:
        cfg = load_config(preset, overrides)
        with warnings.catch_warnings(record=True) as caught:  # a setting that did not apply, a fallback: in the row
            warnings.simplefilter("always")
            result = run_scene(Path(scene), cfg, Path(out_root), name=name, until=until)
        return result, recon_warnings(caught)
    except Exception as exc:  # a failed run is a result too
        return f"{type(exc).__name__}: {exc}", recon_warnings(caught)


def describe(graph) -> dict:
    """A run's row: its metrics (``per_view``: each held-out view's PSNRs and share of pixels no training view sees;
    ``unfilled``: the scores before those pixels were filled, when they were), splats, seconds per stage (``seconds``:
    their sum, a shared start's included) and what its init made."""
    from recon.scene.names import metrics_id

    row: dict = {"stages": {k: rec.seconds for k, rec in graph.stages.items()}}
    poses = graph.nodes[metrics_id("poses")].values
    if poses.get("source") == "estimated":
        row["poses"] = poses
    m = graph.nodes[metrics_id("optimize")].values
    init = graph.nodes[metrics_id("init")].values
    stereo = init.get("mvs", {})
    row.update({k: m.get(k) for k in METRICS})
    row.update(gaussians=m.get("gaussians"), peak_memory_mb=m.get("peak_memory_mb"), backend=m.get("backend"),
               resolution=m.get("resolution"), seconds=sum(row["stages"].values()),
               init=init.get("source"), init_points=init.get("points"), stereo_kept=stereo.get("kept_share"),
               stereo_coverage=stereo.get("coverage"),
               fill_points=stereo.get("fill_points"), fill_dropped=stereo.get("fill_dropped"),
               train_views=graph.nodes[metrics_id("views")].values["train_indices"],
               test_views=len(graph.nodes[metrics_id("views")].values["test_indices"]),
               unseen=m.get("unseen"),
               per_view=by_view(m, ("psnr", "psnr_masked", "unseen")))
    if "unfilled" in m:  # the held-out renders were filled where no training view looked: the scores without it
        row["unfilled"] = {**{k: m["unfilled"].get(k) for k in ("psnr", "psnr_masked", "ssim")},
                           "per_view": by_view(m["unfilled"], ("psnr", "psnr_masked"))}
    return row


def by_view(metrics: dict, keys: tuple[str, ...]) -> dict:
    """``keys`` of each held-out view in ``metrics["per_view"]``, those it has."""
    return {name: {k: v[k] for k in keys if v.get(k) is not None} for name, v in metrics.get("per_view", {}).items()}


def recon_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """The first lines of the warnings recon's own code gave (not its libraries'), each once, at most MAX_WARNINGS."""
    import recon

    package = str(Path(recon.__file__).resolve().parent)
    return capped([first_line(w.message) for w in caught if str(Path(w.filename).resolve()).startswith(package)])


def capped(said: list[str]) -> list[str]:
    """Each line once, at most MAX_WARNINGS of them and a count of the rest."""
    said = list(dict.fromkeys(said))
    if len(said) > MAX_WARNINGS:
        said = said[:MAX_WARNINGS] + [f"and {len(said) - MAX_WARNINGS} more"]
    return said


def write_strip(graph, path: Path) -> str | None:
    """Photo | render | 4x absolute error of the first held-out view with a render; the file name."""
    from recon.eval.runner import photo_and_render
    from recon.io import images as image_io

    for view in graph.views("test"):
        pair = photo_and_render(graph, view)
        if pair is not None:
            photo, render = pair
            error = np.clip(4 * np.abs(render - photo), 0, 1)
            strip = np.concatenate([photo, render, error], 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            image_io.write_image(path, image_io.downsample(strip, max(1, -(-render.shape[1] // STRIP_WIDTH))))
            return path.name
    return None


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (scene, views, variant) that ran, and each variant's gain in PSNR over each plain 3DGS baseline
    (``plain``: from random points; ``plain_sfm``: from SfM points) on the same views."""
    ok = [r for r in runs if "error" not in r]
    baselines = {b: {(r["scene"], r["views"]): r for r in ok if r["variant"] == b} for b in ("plain", "plain_sfm")}
    rows = []
    for r in ok:
        row = {k: r.get(k) for k in ("scene", "views", "variant", "same_as", *METRICS, "seconds", "peak_memory_mb")}
        for baseline, runs_of in baselines.items():
            base = runs_of.get((r["scene"], r["views"]))
            if base is None or r["variant"] in baselines:
                continue
            row[f"psnr_gain_over_{baseline}"] = r["psnr"] - base["psnr"]
            if r.get("psnr_masked") is not None and base.get("psnr_masked") is not None:
                row[f"psnr_masked_gain_over_{baseline}"] = r["psnr_masked"] - base["psnr_masked"]
        rows.append(row)
    return rows


def markdown(report: dict) -> str:
    """The report's table: one row per scene and view count, a column pair per variant."""
    runs = [r for r in report["runs"] if "error" not in r]
    ran = {r["variant"] for r in runs}
    variants = [v for v in report.get("variants", {}) if v in ran] + sorted(ran - set(report.get("variants", {})))
    lines = ["| scene | views | " + " | ".join(variants) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in variants) + " |"]
    by_key = {(r["scene"], r["views"], r["variant"]): r for r in runs}
    notes = []
    for scene, views in dict.fromkeys((r["scene"], r["views"]) for r in runs):
        cells = []
        for v in variants:
            r = by_key.get((scene, views, v))
            if r is None:
                cells.append("")
                continue
            cell = f"{r['psnr']:.2f}" + (f" / {r['psnr_masked']:.2f} M" if r.get("psnr_masked") is not None else "")
            if r.get("warnings"):
                notes += [f"- ({len(notes) + 1}) {scene}, {views} views, {v}: " + "; ".join(r["warnings"])]
                cell += f" ({len(notes)})"
            cells.append(cell)
        lines.append(f"| {scene} | {views} | " + " | ".join(cells) + " |")
    lines += ["",
              "PSNR (whole image) / PSNR-M (over the object mask, where the capture has masks), held-out views, dB."]
    if notes:
        lines += ["", "Runs that warned (a setting that did not apply, a fallback):", *notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--scenes", default="", help="comma-separated folder names (default: every capture under --root)")
    ap.add_argument("--views", default="3,6,9")
    ap.add_argument("--variant", action="append", default=[], help="NAME=PRESET[,section.key=value...]")
    ap.add_argument("--set", action="append", default=[], help="section.key=value for every variant")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process")
    ap.add_argument("--out", type=Path, help="the report (JSON)")
    ap.add_argument("--images", type=Path, help="folder for the photo | render | error strips of 3-view runs")
    ap.add_argument("--work", type=Path, help="keep the runs' output folders here (default: a temporary folder)")
    ap.add_argument("--note", default="")
    ap.add_argument("--table", type=Path, help="print the markdown table of an existing report and stop")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _terminated)  # a timeout's SIGTERM ends the runs too, as Ctrl-C does
    if args.table:
        print(markdown(json.loads(args.table.read_text())), end="")
        return 0
    if args.out is None:
        ap.error("--out is required")
    from recon.config import parse_override

    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    common = dict(parse_override(s) for s in args.set)
    with tempfile.TemporaryDirectory() as fixes:
        scenes = [corrected(p, Path(fixes)) for p in captures_under(args.root, args.scenes)]
        return run(args, variants, common, scenes)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace, variants: list, common: dict, scenes: list[Path]) -> int:
    """Every variant on every scene at every view count; the exit status."""
    from recon.config import digest, load_config, to_dict

    protocols, unreadable = {}, {}
    for path in scenes:  # one capture that cannot be read (a missing package, a broken file) stops no other
        try:
            protocols[path] = scene_protocol(path)
        except Exception as exc:  # noqa: BLE001 (reported in the JSON and on stderr)
            unreadable[path.name] = f"{type(exc).__name__}: {first_line(exc)}"
            print(f"{path.name}: not read ({unreadable[path.name]})", file=sys.stderr, flush=True)
    compile_seconds = compile_kernels()
    report = {"benchmark": "real", "environment": {**environment(), "gsplat_compile_seconds": compile_seconds},
              "note": args.note, "jobs": args.jobs, "root": str(args.root),
              "variants": {n: {"preset": p, "overrides": o} for n, p, o in variants}, "common_overrides": common,
              "protocols": {p.name: v for p, v in protocols.items() if v is not None},
              "skipped": [p.name for p, v in protocols.items() if v is None], "unreadable": unreadable, "runs": []}
    tasks, aliases = [], []
    # View counts outermost: an interrupted run has every scene at the first view counts (but for runs that wait for
    # a shared start, which go ahead of the rest when it ends).
    for n in [int(v) for v in args.views.split(",")]:
        for scene, protocol in protocols.items():
            if protocol is None:
                continue
            seen: dict[str, str] = {}
            for name, preset, overrides in variants:
                if not applies(preset, protocol):
                    continue
                merged = {**common, **overrides, **protocol["overrides"], "views.count": n, "device": "auto"}
                resolved = to_dict(load_config(preset, merged))
                key = digest({k: v for k, v in resolved.items() if k != "preset"}, 0)
                base = {"scene": scene.name, "views": n, "variant": name, "kind": protocol["kind"]}
                if key in seen:
                    aliases.append({**base, "same_as": seen[key]})
                    continue
                seen[key] = name
                tasks.append((base, (str(scene), preset, merged, f"{scene.name}-{n}v-{name}",
                                     str(args.images) if args.images and n == 3 else None), start_key(scene, resolved)))
    wall = time.perf_counter()
    shared = {k for k, count in Counter(t[2] for t in tasks).items() if count > 1}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        starts = work / STARTS
        # At most --jobs in flight, each in a process of its own (a worker killed by a signal takes no other run
        # with it), taken from a queue of ("run", its row's first fields, its arguments, (its shared start's folder,
        # what the start said) or None) and ("start", key, its arguments, folder). A start's runs wait for it, then
        # go to the queue's front: runs finish while later starts are made, instead of every start at once.
        queue: deque = deque()
        waiting: dict[str, list] = {}  # a shared start's key: the runs that wait for it
        for base, a, key in tasks:  # in order, a shared start where its first run would be
            if key not in shared:
                queue.append(("run", base, a, None))
                continue
            if key not in waiting:
                queue.append(("start", key, a, f"{a[3]}-{key[:8]}"))
            waiting.setdefault(key, []).append((base, a))
        workers = Workers(max(1, args.jobs))
        try:  # an interruption (Ctrl-C, a timeout's SIGTERM) ends the runs still going
            while queue or workers:
                while queue and workers.free():
                    item = queue.popleft()
                    kind, _, a, then = item
                    if kind == "start":
                        workers.start(item, make_start, a[0], a[1], a[2], str(starts), then)
                    else:
                        start = str(starts / then[0]) if then is not None else None
                        workers.start(item, run_one, a[0], a[1], a[2], str(work), a[3], a[4], start)
                for (kind, first, a, then), outcome in workers.finished():
                    if kind == "start":  # its runs go next (without it, if it failed)
                        failed = "error" in outcome
                        runs = [("run", {**base, **({"start_error": outcome["error"]} if failed else {})}, b,
                                 None if failed else (then, outcome.get("warnings", [])))
                                for base, b in waiting.pop(first)]
                        queue.extendleft(reversed(runs))
                        continue
                    row = {**first, **outcome}
                    if then is not None and "start" in row:  # what the start said, as said of this run
                        folder, said = then
                        row["warnings"] = capped([w.replace(folder, a[3]) for w in said] + row.get("warnings", []))
                    report["runs"].append(row)
                    print(json.dumps(row), flush=True)
                    write(report, args.out, aliases, wall)
        finally:
            workers.stop()
    write(report, args.out, aliases, wall)
    print(markdown(report), end="")
    return 0 if not unreadable and not any("error" in r for r in report["runs"]) else 1


class Workers:
    """Tasks, each in a spawned process of its own, at most ``jobs`` at a time; a task's result is what its function
    returned, or {"error"} where the process died without one (a signal: a crash in a CUDA extension, the OOM
    killer)."""

    EXIT_WAIT = 30.0  # seconds a process that has sent its result may take to exit before it is killed

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.context = get_context("spawn")
        self.running: dict[Connection, tuple[BaseProcess, Any]] = {}  # the result's end: (process, the task)

    def __bool__(self) -> bool:
        return bool(self.running)

    def free(self) -> bool:
        return len(self.running) < self.jobs

    def start(self, task: Any, fn: Callable[..., Any], *args: Any) -> None:
        receive, send = self.context.Pipe(duplex=False)
        process = self.context.Process(target=_worker, args=(send, fn, args), daemon=True)
        process.start()
        send.close()  # the child holds the only sending end: its death ends the connection
        self.running[receive] = (process, task)

    def stop(self) -> None:
        """End the tasks still running (their processes terminated)."""
        for receive, (process, _) in list(self.running.items()):
            process.terminate()
            _reap(process, self.EXIT_WAIT)
            receive.close()
        self.running.clear()

    def finished(self) -> list[tuple[Any, Any]]:
        """(task, result) of the tasks that have ended, waiting for one at least."""
        done = []
        for receive in connection.wait(list(self.running)):
            assert isinstance(receive, Connection)
            process, task = self.running.pop(receive)
            try:
                outcome = receive.recv()
            except (EOFError, OSError):  # nothing, or part of a result, was sent: the process died
                outcome = None
            receive.close()
            _reap(process, self.EXIT_WAIT)
            if outcome is None:
                code = process.exitcode
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                outcome = {"error": f"the worker process died ({how}) before it returned"}
            done.append((task, outcome))
        return done


def _reap(process: BaseProcess, wait: float) -> None:
    """Wait up to ``wait`` seconds for ``process`` to exit, then kill it (an exit that hangs stalls no run)."""
    process.join(wait)
    if process.is_alive():
        process.kill()
        process.join()


def _worker(send: Connection, fn: Callable[..., Any], args: tuple) -> None:
    """A task's process: ``fn(*args)``, sent back (an exception as {"error"}). On Linux it ends with the bench, even a
    bench killed outright (SIGKILL), rather than go on using the GPU by itself."""
    if sys.platform == "linux":
        import ctypes
        import multiprocessing

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the parent dies
        parent = multiprocessing.parent_process()
        if parent is not None and os.getppid() != parent.pid:  # it died before that was set
            os._exit(1)
    try:
        outcome = fn(*args)
    except BaseException as exc:  # noqa: BLE001 (the parent records it as the run's error)
        outcome = {"error": f"{type(exc).__name__}: {first_line(exc)}"}
    send.send(outcome)
    send.close()


def start_key(scene: Path, resolved: dict) -> str:
    """What decides a run's stages up to SHARED_UNTIL: the capture and the resolved settings but for the later
    stages' sections."""
    from recon import stages
    from recon.config import digest

    later = {stages.module(name).CONFIG for name in stages.PIPELINE[stages.PIPELINE.index(SHARED_UNTIL) + 1:]}
    return digest(str(scene.resolve()), {k: v for k, v in resolved.items() if k not in later and k != "preset"})


def write(report: dict, out: Path, aliases: list[dict], wall: float) -> None:
    """Rewrite the report: runs in a stable order, aliases filled from the runs they equal, a fresh summary."""
    done = {(r["scene"], r["views"], r["variant"]): r for r in report["runs"] if "same_as" not in r}
    filled = [{**done[(a["scene"], a["views"], a["same_as"])], **a} for a in aliases
              if (a["scene"], a["views"], a["same_as"]) in done]
    runs = sorted(list(done.values()) + filled, key=lambda r: (r["scene"], r["views"], r["variant"]))
    report["runs"] = runs
    report["wall_seconds"] = time.perf_counter() - wall
    report["summary"] = summarise(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
