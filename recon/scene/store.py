"""The scene folder on disk: ``scene.json`` plus ``assets/``, written atomically.

Every file recon writes goes through :func:`recon.files.atomic_write`: it is
written to a temporary name in the same folder and renamed into place, so a
killed run leaves either the old file or the new one, never half of one. A lock file
stops two runs from writing one folder at a time.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recon.errors import InputError, output_error
from recon.files import atomic_write, discard, make_folder, write_json
from recon.io import images as image_io
from recon.io import ply
from recon.scene.graph import PointCloud, SceneGraph, View
from recon.scene.names import ASSETS_DIR

SCENE_FILE = "scene.json"
LOCK_FILE = ".lock"


class SceneStore:
    """One scene folder: ``<root>/scene.json`` and ``<root>/assets/``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def scene_file(self) -> Path:
        return self.root / SCENE_FILE

    def exists(self) -> bool:
        return self.scene_file.is_file()

    def asset(self, relative: str) -> Path:
        return self.root / relative

    # --- scene.json ------------------------------------------------------------
    def load(self) -> SceneGraph:
        if not self.scene_file.is_file():
            raise InputError(f"{self.root}: no {SCENE_FILE} here; is this a recon output folder?")
        try:
            data = json.loads(self.scene_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{self.scene_file}: unreadable scene file ({exc})") from None
        return SceneGraph.from_json(data, root=self.root, where=str(self.scene_file))

    def save(self, graph: SceneGraph) -> Path:
        """Write pending assets, then ``scene.json`` (last, so it never names a missing file)."""
        graph.root = self.root
        self._write_pending(graph)
        return write_json(self.scene_file, graph.to_json())

    def _write_pending(self, graph: SceneGraph) -> None:
        for node in list(graph.nodes.values()):
            if isinstance(node, View):
                if node.pending_image is not None:
                    rel = f"{ASSETS_DIR}/images/{node.name}.png"
                    pixels = node.pending_image()
                    atomic_write(self.asset(rel), image_io.write_image, pixels)
                    node.image, node.pending_image = rel, None
                if node.pending_mask is not None:
                    rel = f"{ASSETS_DIR}/masks/{node.name}.png"
                    mask = node.pending_mask()
                    atomic_write(self.asset(rel), image_io.write_mask, mask)
                    node.mask, node.pending_mask = rel, None
            elif isinstance(node, PointCloud) and node.path is None and node.points is not None:
                rel = _free_name(graph, f"{ASSETS_DIR}/{node.id.replace('/', '_')}", ".ply")
                pts, cols = node.points, node.colors
                atomic_write(self.asset(rel), ply.write_points, pts, cols)
                node.path = rel

    # --- locking ----------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``<root>/.lock`` for the duration; fail at once if another live run holds it.

        A lock whose holder cannot be read from it (empty, truncated, not ``PID HOST``) is stale, as is one
        whose process on this machine is gone: the lock only ever appears with its text in place.
        """
        make_folder(self.root)
        lock = self.root / LOCK_FILE
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for attempt in range(2):
            try:
                created = _create_lock(lock, me)
            except OSError as exc:
                raise output_error(exc, lock) from None
            if created:
                break
            if attempt == 1 or holder_alive(lock):
                holder = lock_holder(lock)
                raise InputError(
                    f"{self.root}: output folder is held by another run (pid {holder[0] if holder else '?'}); "
                    f"wait for it, or delete {lock} if that run is gone"
                )
            lock.unlink(missing_ok=True)  # stale: its process is gone or it never held a run
        try:
            yield
        finally:
            if _read_text(lock) == me:
                lock.unlink()


def _free_name(graph: SceneGraph, stem: str, suffix: str) -> str:
    """``stem + suffix``, or ``stem-N + suffix`` when another node names that file (a node renamed by a stage
    keeps its file: the import's SfM points set aside while estimated ones stand in)."""
    named = {getattr(n, "path", None) for n in graph.nodes.values()}
    name, n = f"{stem}{suffix}", 1
    while name in named:
        name, n = f"{stem}-{n}{suffix}", n + 1
    return name


def _create_lock(lock: Path, text: str) -> bool:
    """Create ``lock`` holding ``text``; False if it exists.

    The text is written to a file of this process's own and hard-linked into place, so that no other run
    ever reads the lock half-written. Where the file system has no hard links, the lock is created
    exclusively and then written.
    """
    own = lock.with_name(f"{lock.name}-{os.getpid()}")
    try:
        own.write_text(text)
        os.link(own, lock)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        discard(own)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def lock_holder(lock: Path) -> tuple[int, str] | None:
    """(pid, host) written in ``lock``, or None when it cannot be read as such."""
    words = (_read_text(lock) or "").split()
    if len(words) != 2 or not (words[0].isascii() and words[0].isdigit()) or int(words[0]) < 1:
        return None
    return int(words[0]), words[1]


def holder_alive(lock: Path) -> bool:
    """Whether the run that wrote ``lock`` may still be running (a lock held from another machine counts as alive)."""
    holder = lock_holder(lock)
    if holder is None:
        return False  # unreadable: never written by a live run
    pid, host = holder
    if host != socket.gethostname():
        return True  # cannot check another machine's processes
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True
