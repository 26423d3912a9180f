"""Run a suite: one task per scene, in turn or on a Ray cluster, resumable, into one results folder.

Layout of ``OUT`` (``--out``)::

    runs/<scene>/          recon's output folder of each scene (scene.json, assets/, metrics.json)
    scenes/<scene>.json    the scene's result: metrics, per-view metrics, stage seconds (or why it failed)
    scenes/<scene>/grid/   ground truth and render of a few test views (for the plots)
    submission/<scene>/    SpaRe only: renders of the test views at the photos' size, named as the challenge expects
    table.md, table.csv, plots/, summary.json   the aggregates (recon/eval/tables.py)
    ray.json               on Ray: the workers' placement and the seconds before the first scene began

A scene whose result file exists, finished, for the same protocol and
config, is skipped; ``force`` redoes it. The task (:func:`evaluate_scene`)
returns its files as bytes instead of writing them, so that Ray workers on
other machines need no shared disk; the driver writes everything atomically.
"""

from __future__ import annotations

import gc
import io
import json
import platform
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recon import progress
from recon.config import digest, load_config, to_dict
from recon.errors import InputError, ReconError
from recon.eval.suites import SceneTask, Suite
from recon.files import atomic_write, write_json
from recon.scene.names import GAUSSIANS_PRIOR, PRIOR_RENDERS_DIR, RENDERS_DIR

IMAGE_METRICS = ("psnr", "ssim", "lpips", "psnr_masked", "ssim_masked", "lpips_masked", "psnr_black", "ssim_black",
                 "lpips_black", "ssim_box", "lpips_box")
GRID_VIEWS = 3
GRID_WIDTH = 320


@dataclass
class EvalOptions:
    out: Path
    device: str | None = None  # None: the preset's or the overrides' (auto unless they set it)
    overrides: dict[str, Any] | None = None
    force: bool = False
    ray: str | None = None  # None: in this process; "local" or an address: a Ray cluster
    gpus_per_scene: float = 1.0  # on Ray: the GPUs each scene holds (below 1 lets scenes share a GPU)


def scene_key(suite: Suite, task: SceneTask, options: EvalOptions) -> str:
    """What a finished result must match to be reused: the protocol and the settings the preset and every override
    resolve to now (a result from before a preset's defaults changed is not reused), the device aside."""
    overrides = {**task.overrides, **(options.overrides or {})}
    settings = {k: v for k, v in to_dict(load_config(suite.preset, overrides)).items() if k != "device"}
    return digest({"protocol": suite.protocol, "settings": settings}, 0)


def result_path(out: Path, name: str) -> Path:
    return Path(out) / "scenes" / f"{name}.json"


def finished(out: Path, name: str, key: str) -> dict | None:
    path = result_path(out, name)
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if result.get("status") == "ok" and result.get("key") == key else None


def evaluate_scene(suite_name: str, preset: str, task: SceneTask, key: str, out: str, device: str | None,
                   overrides: dict[str, Any], submission: str | None, *,
                   report: Callable[[str, str], None] | None = None) -> tuple[dict, dict[str, bytes]]:
    """Run one scene end to end; (result, files relative to ``out``). Never raises for a scene's own failure.

    ``report(scene, stage)`` is told of each stage as it starts (progress, also from a Ray worker).
    """
    from recon.pipeline import run_scene

    start = time.perf_counter()
    host = platform.node()
    if task.problem is not None:
        return _failure(suite_name, task.name, key, task.problem, host=host), {}
    assert task.path is not None  # only a task with a problem has no folder
    try:
        cfg = load_config(preset, {**task.overrides, **overrides, **({} if device is None else {"device": device})})
        result = run_scene(task.path, cfg, Path(out) / "runs", name=task.name,
                           on_stage=None if report is None else lambda stage: report(task.name, stage))
        graph = result.graph
        files = _grid_files(graph, task.name)
        if submission == "spare":
            files.update(_spare_submission(graph, task.name, cfg.device))
    except ReconError as exc:
        return _failure(suite_name, task.name, key, f"{task.name}: {exc}", host=host), {}
    except Exception as exc:  # a bug, not bad input: keep the other scenes going, keep the trace
        return _failure(suite_name, task.name, key, f"{task.name}: {type(exc).__name__}: {exc}", host=host,
                        traceback=traceback.format_exc()), {}
    stages = {name: rec.seconds for name, rec in graph.stages.items()}
    optimize = dict(graph.stages["optimize"].metrics) if "optimize" in graph.stages else {}
    prior = dict(graph.stages["prior"].metrics) if "prior" in graph.stages else {}
    if prior.get("test_views"):  # the prior's splats are the scene's: score them
        optimize = {**optimize, **prior}
    per_view = optimize.pop("per_view", {})
    mesh = graph.stages["mesh"].metrics if "mesh" in graph.stages else {}
    metrics = {k: optimize.get(k) for k in IMAGE_METRICS}
    metrics.update({k: v for k, v in mesh.get("geometry", {}).items() if isinstance(v, (int, float))})
    poses = graph.stages.get("poses")
    errors = poses.metrics.get("against_given") if poses is not None else None
    if isinstance(errors, dict):  # estimated poses scored against the given ones
        metrics.update(pose_rotation_deg=errors["rotation_error_deg"]["mean"],
                       pose_translation_relative=errors["translation_error_relative"])
    views = graph.stages["views"].metrics if "views" in graph.stages else {}
    return {"scene": task.name, "suite": suite_name, "key": key, "host": host, "status": "ok", "metrics": metrics,
            "per_view": per_view, "stages": stages, "seconds": time.perf_counter() - start,
            "train_views": views.get("train_indices"), "test_views": views.get("test_indices"),
            "backend": optimize.get("backend"),
            "gaussians": optimize.get("gaussians"), "lpips_status": optimize.get("lpips_status"),
            "run": str(result.out_dir)}, files


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    from recon.io.images import to_uint8

    buf = io.BytesIO()
    Image.fromarray(pixels if pixels.dtype == np.uint8 else to_uint8(pixels)).save(buf, format="PNG")
    return buf.getvalue()


def _grid_files(graph, name: str) -> dict[str, bytes]:
    """Ground truth and render of up to GRID_VIEWS test views, at most GRID_WIDTH wide."""
    from recon.io import images as image_io

    files = {}
    render_dir = PRIOR_RENDERS_DIR if GAUSSIANS_PRIOR in graph.nodes else RENDERS_DIR
    for view in [v for v in graph.views("test") if v.image][:GRID_VIEWS]:
        pair = photo_and_render(graph, view, render_dir)
        if pair is None:
            continue
        truth, render = pair
        factor = max(1, -(-render.shape[1] // GRID_WIDTH))
        files[f"scenes/{name}/grid/{view.name}_truth.png"] = _png(image_io.downsample(truth, factor))
        files[f"scenes/{name}/grid/{view.name}_render.png"] = _png(image_io.downsample(render, factor))
    return files


def photo_and_render(graph, view, render_dir: str = RENDERS_DIR) -> tuple[np.ndarray, np.ndarray] | None:
    """(photo, render) [H, W, 3] of held-out ``view``, the photo down-sampled to the render's size; None without
    a render or a photo."""
    from recon.io import images as image_io

    render_path = graph.resolve(f"{render_dir}/{view.name}.png")
    if not view.image or not render_path.is_file():
        return None
    render = image_io.read_image(render_path)
    photo = image_io.read_image(graph.resolve(view.image))
    photo = image_io.downsample(photo, max(1, photo.shape[1] // render.shape[1]))
    return photo[: render.shape[0], : render.shape[1]], render


def _spare_submission(graph, name: str, device_name: str) -> dict[str, bytes]:
    """SpaRe's submission: every test view rendered at the photos' own size (1600x1200), named as its inputs with
    lighting 3."""
    from recon.devices import resolve_device
    from recon.live import load_scene_splats
    from recon.render.scene import render_camera

    splats, kind = load_scene_splats(graph, resolve_device(device_name))
    files = {}
    for view in graph.views("test"):
        image = render_camera(splats, kind, graph.camera_of(view), float(graph.meta.get("downscale", 1)))
        files[f"submission/{name}/{spare_image_name(graph, view.index)}"] = _png(image)
    return files


def spare_image_name(graph, index: int) -> str:
    """``rect_{i+1:03d}_3_r5000.png`` for DTU scans, ``cam_{i+1:03d}_3_0000.png`` for SpaRe's own scenes."""
    return graph.meta["spare"]["image_pattern"].format(index=index + 1)


def run_suite(suite: Suite, options: EvalOptions) -> list[dict]:
    """Evaluate every scene of ``suite`` (reusing finished ones); returns every scene's result, in suite order."""
    out = Path(options.out)
    keys = {t.name: scene_key(suite, t, options) for t in suite.tasks}  # settings checked before anything is written
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder (--out names the results folder)")
    out.mkdir(parents=True, exist_ok=True)
    overrides = options.overrides or {}
    results: dict[str, dict] = {}
    todo = []
    for t in suite.tasks:
        done = None if options.force else finished(out, t.name, keys[t.name])
        if done is not None:
            results[t.name] = {**done, "reused": True}
        else:
            todo.append(t)
    args = [(suite.name, suite.preset, t, keys[t.name], str(out), options.device, overrides, suite.submission)
            for t in todo]
    with progress.task(f"eval {suite.name}: {len(todo)} scene(s) to run, {len(results)} reused", len(todo)) as bar:
        running: dict[str, str] = {}  # scene -> the stage it is in

        def report(scene: str, stage: str) -> None:
            running[scene] = stage
            bar.update(f"eval {suite.name}: " + ", ".join(f"{s} {st}" for s, st in running.items()))

        if options.ray is None:
            for a in args:
                result, files = evaluate_scene(*a, report=report)
                running.pop(result["scene"], None)
                results[result["scene"]] = _store(out, result, files)
                bar.advance()
        else:
            for result, files in _on_ray(args, options.ray, options.gpus_per_scene, report, out):
                running.pop(result["scene"], None)
                results[result["scene"]] = _store(out, result, files)
                bar.advance()
    return [results[t.name] for t in suite.tasks]


def _store(out: Path, result: dict, files: dict[str, bytes]) -> dict:
    for rel, data in files.items():
        atomic_write(out / rel, Path.write_bytes, data)
    write_json(result_path(out, result["scene"]), result)
    return result


def _on_ray(args: list[tuple], address: str, gpus_per_scene: float, report: Callable[[str, str], None],
            out: Path) -> Iterator[tuple[dict, dict[str, bytes]]]:
    """Yield (result, files) as scenes finish on a Ray cluster.

    One worker (a Ray actor) per slot: ``gpus_per_scene`` GPUs of a machine (1: a GPU to itself), or one CPU on a
    cluster without GPUs. A worker runs its scenes one after another in one process, so Python's start, the
    imports, the CUDA context and gsplat's kernels (built by the first worker of each machine, loaded by the rest)
    are paid once per worker, not once per scene, and each worker has its machine's CPUs shared among its slots
    (Ray sets the worker's threads to its share unless OMP_NUM_THREADS is set). A scene goes to a worker once the
    worker has started, so none waits on a worker Ray cannot place. The stage each scene is in comes back through
    a queue while they run; a worker that dies (out of memory, a lost node) fails its scene and another takes its
    place; when every worker dies before its first scene, the scenes left fail with the reason. ``ray.json`` in
    ``out`` records the placement, the seconds Ray took to start and (to half a second) those before the first
    scene began.
    """
    if not args:
        return
    start = time.perf_counter()
    try:
        import ray
        from ray.util.queue import Empty, Queue
    except ImportError:
        raise InputError("--ray: Ray is not installed (pip install ray)") from None
    if not ray.is_initialized():
        _start_ray(ray, address)
    started = time.perf_counter()
    nodes = ray.nodes()
    gpus, cpus, count = ray_slots(nodes, gpus_per_scene, len(args))
    placement = {"address": address, "machines": sum(1 for n in nodes if n.get("Alive")), "workers": count,
                 "gpus_per_worker": gpus, "cpus_per_worker": cpus, "scenes": len(args),
                 "ray_start_seconds": round(started - start, 2)}
    write_json(out / "ray.json", placement)
    first_stage = None
    stages = Queue(actor_options={"num_cpus": 0})
    worker: Any = ray.remote(num_gpus=gpus, num_cpus=cpus, max_restarts=0)(SceneWorker)  # Ray's handles, untyped
    starting: dict[Any, Any] = {}  # ready ref -> a worker not yet started

    def add_worker() -> None:
        w = worker.remote(gpus > 0)
        starting[w.__ray_ready__.remote()] = w

    for _ in range(count):
        add_worker()
    idle: list[Any] = []
    todo = list(args)
    running: dict[Any, tuple[Any, tuple]] = {}  # scene ref -> (its worker, its arguments)
    why_not = "none started"
    try:
        while todo or running:
            while idle and todo:
                w, a = idle.pop(), todo.pop(0)
                running[w.evaluate.remote(stages, *a)] = (w, a)
            if not (idle or running or starting):  # every worker died before its first scene
                for a in todo:
                    yield _failed(a, f"no Ray worker started ({why_not})"), {}
                return
            ready, _ = ray.wait(list(running) + list(starting), num_returns=1, timeout=0.5)
            while True:
                try:
                    report(*stages.get_nowait())
                except Empty:
                    break
                if first_stage is None:  # the workers' start: a process, the imports, the CUDA context, the kernels
                    first_stage = time.perf_counter() - started
                    write_json(out / "ray.json", {**placement, "first_scene_seconds": round(first_stage, 2)})
            for ref in ready:
                if ref in starting:
                    w = starting.pop(ref)
                    try:
                        ray.get(ref)
                        idle.append(w)
                    except Exception as exc:  # it could not start (its kernels, its machine): no scene was lost
                        why_not = f"{type(exc).__name__}: {exc}"
                        _kill(ray, w)
                    continue
                w, a = running.pop(ref)
                try:
                    done = ray.get(ref)
                    idle.append(w)
                except Exception as exc:  # the worker died: the scene failed, not the eval; a new worker goes on
                    _kill(ray, w)
                    add_worker()
                    done = (_failed(a, f"Ray task failed ({type(exc).__name__}: {exc})"), {})
                yield done
    finally:
        for w in idle + [w for w, _ in running.values()] + list(starting.values()) + [stages.actor]:
            _kill(ray, w)


def _start_ray(ray: Any, address: str) -> None:
    """Join the cluster at ``address``, or with "local" start one here (or join the one ``ray start`` left here)."""
    # A Ray started here starts only the workers asked for: by default the first driver waits while Ray starts an
    # idle worker per CPU (a Python process each, 32 on a 32-core machine) that no scene uses. Ray refuses the
    # setting when it joins a running cluster instead.
    own = {"_system_config": {"prestart_worker_first_driver": False}}
    for extra in ([own, {}] if address == "local" else [{}]):
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     log_to_driver=False, configure_logging=False, **extra)
            return
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if extra and isinstance(exc, ValueError) and "_system_config" in str(exc):
                continue
            raise InputError(f"--ray {address}: cannot reach a Ray cluster ({exc})") from None


def _failed(a: tuple, error: str) -> dict:
    """The result of the scene of :func:`evaluate_scene`'s arguments ``a`` that failed on Ray with ``error``."""
    return _failure(a[0], a[2].name, a[3], f"{a[2].name}: {error}")


def _failure(suite: str, scene: str, key: str, error: str, **extra: Any) -> dict:
    """A scene's result when it failed; ``error`` names the scene and says why."""
    return {"scene": scene, "suite": suite, "key": key, "status": "failed", "error": error, **extra}


def _kill(ray: Any, actor: Any) -> None:
    try:
        ray.kill(actor)
    except Exception:  # gone already, or the cluster with it: nothing left to stop
        pass


def ray_slots(nodes: list[dict], gpus_per_scene: float, scenes: int) -> tuple[float, int, int]:
    """(GPUs, CPUs, count) of the Ray workers for ``scenes`` scenes on a cluster of ``nodes`` (``ray.nodes()``).

    With GPUs: as many workers of ``gpus_per_scene`` GPUs as the machines hold (below 1, as many as fit in one GPU,
    on each GPU: Ray never spreads a share over two), each with an equal share of its machine's CPUs (the smallest
    share of any machine, so that every worker fits wherever it lands); without: one CPU each. Never more workers
    than scenes.
    """
    def fit(gpus: float) -> int:
        if gpus_per_scene < 1:
            return int(gpus + 1e-9) * int(1 / gpus_per_scene + 1e-9)
        return int(gpus / gpus_per_scene + 1e-9)

    machines = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    with_gpus = [(fit(r["GPU"]), r.get("CPU", 0.0)) for r in machines if r.get("GPU", 0) > 0]
    if not with_gpus:
        return 0.0, 1, max(1, min(scenes, int(sum(r.get("CPU", 0.0) for r in machines))))
    fits = [(n, cpu) for n, cpu in with_gpus if n > 0]
    if not fits:
        most = max(r.get("GPU", 0) for r in machines)
        raise InputError(f"--ray-gpus {gpus_per_scene:g}: no machine of the Ray cluster has that many GPUs "
                         f"(the most on one is {most:g})")
    cpus = max(1, int(min(cpu // n for n, cpu in fits)))
    return float(gpus_per_scene), cpus, max(1, min(scenes, sum(n for n, _ in fits)))


class SceneWorker:
    """A Ray actor that evaluates scenes one after another (:func:`_on_ray`)."""

    def __init__(self, build_kernels: bool):
        if build_kernels:  # the first worker of a machine builds them (torch's build lock), the others load them
            from recon.render import compile_kernels

            compile_kernels()

    def evaluate(self, stages: Any, *args: Any) -> tuple[dict, dict[str, bytes]]:
        """:func:`evaluate_scene`, its progress sent to the driver through the queue ``stages``."""
        try:
            return evaluate_scene(*args, report=lambda scene, stage: stages.put_nowait((scene, stage)))
        finally:  # the next scene starts with the GPU's memory free, as in a process of its own
            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def spare_zip(out: Path) -> Path | None:
    """``submission.zip``: the scene folders of ``submission/`` at the archive's root, as SpaRe's server expects."""
    import zipfile

    folder = Path(out) / "submission"
    images = sorted(folder.glob("*/*.png"))
    if not images:
        return None

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
            for image in images:
                archive.write(image, image.relative_to(folder).as_posix())

    return atomic_write(Path(out) / "submission.zip", write)
