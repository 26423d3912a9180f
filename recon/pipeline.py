"""Run the stages over one scene: import, check, then each stage in turn, resumably.

Order of work, so that bad input never leaves anything on disk:

1. import and check the scene (nothing written);
2. every stage's ``validate`` (for example: enough images for ``--views``);
3. take the output folder's lock, then run the stages.

A run that made the output folder and fails (or is interrupted) before its
first ``scene.json`` is saved removes the folder again.

Each stage has a key chained from the input digest and the digests of its
own config section (with the device type, CPU or CUDA, for the stages that
compute on it) and of every stage before it. The device is resolved once,
here, and handed to every stage. A stage whose key matches
the record in an existing ``scene.json`` is skipped; the first one that does
not is rerun, with everything after it. Its results and those of every later
stage, past ``--until`` too, are removed first (records, nodes and files), so
that nothing made from what is redone outlives it. ``scene.json`` is saved
after every stage, so a killed run resumes from the last finished one.
"""

from __future__ import annotations

import hashlib
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recon import stages as stage_registry
from recon.config import RunConfig, digest, to_dict
from recon.devices import resolve_device
from recon.errors import InputError
from recon.files import atomic_write, write_json
from recon.io import ImportOptions, import_scene
from recon.scene.graph import Metrics, SceneGraph, StageRecord
from recon.scene.names import ASSETS_DIR
from recon.scene.store import SceneStore


@dataclass
class StageOutcome:
    name: str
    status: str  # "ran", "reused", "off" (a stage its config switches off), or "dropped" (past --until, stale)
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    graph: SceneGraph
    out_dir: Path
    outcomes: list[StageOutcome]


def import_options(cfg: RunConfig) -> ImportOptions:
    d = cfg.data
    return ImportOptions(downscale=d.downscale, max_side=d.max_side, light=d.light, strict=d.strict, masks=d.masks,
                         train_masks=d.train_masks, spare_split=d.spare_split)


def run_scene(scene: Path, cfg: RunConfig, out_root: Path, name: str | None = None, force: bool = False,
              until: str | None = None, on_start: Callable[[Path], None] | None = None,
              on_stage: Callable[[str], None] | None = None) -> RunResult:
    """Import ``scene``, run the stages (up to and including ``until``), and write ``<out_root>/<name>/``.

    ``on_start(folder)`` is called once the output folder is locked, before the first stage (the live viewer);
    ``on_stage(name)`` as each stage starts to run (not when it is reused).
    """
    if name is not None and (not name.strip() or name in (".", "..") or any(sep in name for sep in ("/", "\\"))):
        raise InputError(f"--name {name}: a folder name is wanted, without a path separator (the folder goes in "
                         f"{out_root})")
    running = stage_registry.load(until)
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    graph = import_scene(scene, import_options(cfg))
    import_seconds = time.perf_counter() - t0
    if name:
        graph.name = name
    for module in running:
        validate = getattr(module, "validate", None)
        if validate is not None:
            validate(graph, cfg, device)

    store = SceneStore(Path(out_root) / graph.name)
    fresh = not store.root.exists()
    with store.lock():
        try:
            if on_start is not None:
                on_start(store.root)
            previous = store.load() if store.exists() else None
            if previous is not None and previous.source.get("digest") == graph.source["digest"] and not force:
                renamed = previous.name != graph.name  # a folder copied under a new name takes the folder's
                previous.name = graph.name
                graph = previous
                if renamed:
                    store.save(graph)
                outcomes = [StageOutcome("import", "reused", 0.0)]
            else:
                if previous is not None:  # different input or forced: old assets are stale
                    store.scene_file.unlink()  # first, so that no scene.json names a removed asset
                    shutil.rmtree(store.root / ASSETS_DIR, ignore_errors=True)
                graph.root = store.root
                store.save(graph)
                outcomes = [StageOutcome("import", "ran", import_seconds,
                                         {"views": len(graph.views()), "layout": graph.source["layout"]})]

            key = graph.source["digest"]
            for i, module in enumerate(running):
                on, config_digest, key = _stage_key(module, cfg, device, key)
                record = graph.stages.get(module.NAME)
                if record is not None and record.key == key:
                    outcomes.append(StageOutcome(module.NAME, "reused" if on else "off", record.seconds,
                                                 record.metrics))
                    continue
                _drop_results(store, graph, list(stage_registry.PIPELINE[i:]))
                if not on:
                    graph.stages[module.NAME] = StageRecord(module.NAME, key, config_digest, 0.0, {})
                    outcomes.append(StageOutcome(module.NAME, "off", 0.0))
                    continue
                if on_stage is not None:
                    on_stage(module.NAME)
                start = time.perf_counter()
                graph = module.run(graph, cfg, device)
                seconds = time.perf_counter() - start
                metrics = _stage_metrics(graph, module.NAME)
                for node in graph.nodes.values():
                    if node.provenance.stage == module.NAME:
                        node.provenance.config_digest = config_digest
                        node.provenance.seconds = seconds
                graph.stages[module.NAME] = StageRecord(module.NAME, key, config_digest, seconds, metrics)
                store.save(graph)
                outcomes.append(StageOutcome(module.NAME, "ran", seconds, metrics))

            # The stages after --until keep what an earlier run made only if these settings would reuse it too:
            # config.yaml then describes every result in the folder.
            later = list(stage_registry.PIPELINE[len(running):])
            kept = _still_described(graph, later, cfg, key)
            stale = [s for s in later[kept:] if s in graph.stages and graph.stages[s].config_digest != "off"]
            _drop_results(store, graph, later[kept:])
            outcomes += [StageOutcome(s, "dropped", 0.0) for s in stale]
            if stale:
                warnings.warn(f"{graph.name}: the results of {', '.join(stale)} came from settings other than this "
                              f"run's and are removed (config.yaml describes what is left); a run past --until "
                              f"{running[-1].NAME} makes them again", stacklevel=2)
            write_run_files(store, graph, cfg)
        except BaseException:
            if fresh and not store.exists():  # nothing was finished: no folder is left behind
                shutil.rmtree(store.root, ignore_errors=True)
            raise
    return RunResult(graph, store.root, outcomes)


def _stage_key(module: Any, cfg: RunConfig, device: Any, previous: str) -> tuple[bool, str, str]:
    """Whether the stage is on, the digest of its settings, and its key: the digest chained to the key of the stages
    before it (``previous``), so that a stage is reused only when it and every stage before it would be."""
    section = getattr(cfg, module.CONFIG) if module.CONFIG else None
    on = getattr(module, "enabled", lambda _: True)(cfg)
    # The settings of a stage that is off do not matter; what a stage computes on a device differs between the CPU
    # and CUDA.
    on_device = (device.type,) if getattr(module, "ON_DEVICE", False) else ()
    config_digest = digest(section, cfg.seed, *on_device) if on else "off"
    return on, config_digest, hashlib.sha256(f"{previous}:{module.NAME}:{config_digest}".encode()).hexdigest()[:16]


def _still_described(graph: SceneGraph, later: list[str], cfg: RunConfig, key: str) -> int:
    """How many of the stages ``later`` (past --until, in order) hold results that ``cfg`` would reuse, chained from
    ``key``: on the CPU or on CUDA alike, since config.yaml names the settings, not the device they ran on."""
    import torch

    best = 0
    for device in (torch.device("cpu"), torch.device("cuda")):
        chained, count = key, 0
        for stage in later:
            record = graph.stages.get(stage)
            if record is None:
                break
            _, _, chained = _stage_key(stage_registry.module(stage), cfg, device, chained)
            if record.key != chained:
                break
            count += 1
        best = max(best, count)
    return best


def _drop_results(store: SceneStore, graph: SceneGraph, names: list[str]) -> None:
    """Remove what the stages ``names`` made: their records and nodes (saved at once), then their files.

    ``scene.json`` is saved before any file goes, so it never names a missing one. The files no node names
    are those each stage module declares in ``OUTPUTS`` (imported only when the stage has a record to drop).
    """
    recorded = [name for name in names if name in graph.stages]
    dropped = graph.drop_stage_outputs(set(names))
    if dropped or recorded:
        store.save(graph)
    named = {getattr(n, "path", None) for n in graph.nodes.values()}
    paths = [getattr(n, "path", None) for n in dropped]
    files = [p for p in paths if isinstance(p, str) and not Path(p).is_absolute()]
    declared = [f for name in recorded for f in getattr(stage_registry.module(name), "OUTPUTS", ())]
    for relative in [f for f in files if f not in named] + declared:
        path = store.root / relative
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _stage_metrics(graph: SceneGraph, stage: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for node in graph.of_type(Metrics):
        if node.provenance.stage == stage:
            out.update(node.values)
    return out


def write_run_files(store: SceneStore, graph: SceneGraph, cfg: RunConfig) -> None:
    """The resolved config and every stage's metrics and seconds, next to scene.json."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    atomic_write(store.root / "config.yaml", lambda tmp: tmp.write_text(text))
    metrics = {name: {"seconds": rec.seconds, **rec.metrics} for name, rec in graph.stages.items()}
    write_json(store.root / "metrics.json", {"scene": graph.name, "source": graph.source, "stages": metrics})
