"""Snapshots of a run in progress, for the viewer: ``assets/live/`` in the scene folder.

While the optimize stage trains, it can hand its splats to a
:class:`SnapshotWriter` every few steps. The writer copies them to the host
and writes ``assets/live/splats.ply`` and ``assets/live/status.json`` (step,
total steps, recent loss) from a thread of its own, atomically, keeping only
the newest snapshot: training never waits for the disk, and a viewer in
another process reads the folder like any other scene asset. The folder is
removed when the stage finishes, once the final splats are in the scene graph.

:func:`splat_source` and :func:`load_scene_splats` answer which splats are a
scene's newest: ``gaussians/prior`` when the prior stage ran, else
``gaussians/final``, else, while a run is still optimising, its snapshot here.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import torch

from recon.errors import InputError, ReconError
from recon.files import atomic_write, write_json
from recon.render import SplatKind
from recon.render.splats import load_ply, save_ply
from recon.scene.graph import SceneGraph

LIVE_DIR = "assets/live"
SPLATS = "splats.ply"
STATUS = "status.json"


class SnapshotWriter:
    """Writes the newest snapshot offered to it; older ones still waiting are dropped."""

    def __init__(self, folder: Path, stage: str, kind: str, steps: int):
        self.folder, self.stage, self.kind, self.steps = Path(folder), stage, kind, steps
        shutil.rmtree(self.folder, ignore_errors=True)
        self._pending: tuple[int, dict, dict] | None = None
        self._wake = threading.Condition()
        self._closed = False
        self.written = 0
        self.error: ReconError | None = None
        self._thread = threading.Thread(target=self._loop, name="recon-live", daemon=True)
        self._thread.start()

    def offer(self, step: int, splats: dict[str, torch.Tensor], info: dict) -> None:
        """Queue a snapshot of ``splats`` at ``step`` (copied to the host here, written later)."""
        host = {k: v.detach().to("cpu", copy=True) for k, v in splats.items()}
        with self._wake:
            self._pending = (step, host, info)
            self._wake.notify()

    def close(self, remove: bool = True) -> None:
        """Write what is pending, stop the thread and (by default) remove the folder.

        Raises the error that stopped the writer, if one did (a full disk): the run hears of it here.
        """
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join()
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        try:
            while True:
                with self._wake:
                    while self._pending is None and not self._closed:
                        self._wake.wait()
                    item, self._pending = self._pending, None
                    if item is None:
                        return
                step, splats, info = item
                atomic_write(self.folder / SPLATS, save_ply, splats, self.kind)
                status = {"stage": self.stage, "kind": self.kind, "step": step, "steps": self.steps,
                          "gaussians": int(len(splats["means"])), "time": time.time(), **info}
                write_json(self.folder / STATUS, status)
                self.written += 1
        except ReconError as exc:  # snapshots stop; close() raises it in the run's thread
            self.error = exc


def read_status(root: Path) -> dict | None:
    """The status of the newest snapshot in scene folder ``root``, or None when there is none (or it is being
    replaced)."""
    folder = Path(root) / LIVE_DIR
    if not (folder / STATUS).is_file() or not (folder / SPLATS).is_file():
        return None
    try:
        return json.loads((folder / STATUS).read_text())
    except (OSError, json.JSONDecodeError):
        return None  # being replaced; the next read gets it


def splat_source(graph: SceneGraph) -> tuple[Path, SplatKind, dict | None] | None:
    """(PLY path, kind, live status) of the newest splats, else of a running optimisation's snapshot, else None.

    The live status is None for the final splats (and for a snapshot whose status is being replaced).
    """
    final = graph.splats()
    if final is not None:
        return graph.resolve(final.path), final.kind, None
    live = graph.resolve(f"{LIVE_DIR}/{SPLATS}")
    if not live.is_file():
        return None
    status = read_status(graph.root) if graph.root is not None else None
    return live, (status or {}).get("kind", "3dgs"), status


def load_scene_splats(graph: SceneGraph, device: torch.device) -> tuple[dict[str, torch.Tensor], SplatKind]:
    """(splat parameters, kind) of the scene's final splats, else of a running optimisation's snapshot."""
    source = splat_source(graph)
    if source is None:
        raise InputError(f"{graph.root}: the scene has no splats yet (the optimize stage has not run)")
    path, kind, _ = source
    return load_ply(path, device), kind
