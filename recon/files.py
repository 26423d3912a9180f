"""Writing files so that a killed run never leaves half of one: the ground floor every writer stands on.

:func:`atomic_write` writes to a temporary name in the same folder and renames it into place, so a reader
sees the old file or the new one; failures to write are one line (:class:`~recon.errors.OutputError`)
naming the file recon meant to write. :func:`write_json` writes JSON that way, readable by people;
:func:`read_json_object` reads a JSON object a user gave, with one line naming the file when it is not one.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recon.errors import InputError, OutputError, first_line, output_error

NAME_MAX = 255  # bytes in one file name, on every file system recon writes to


def atomic_write(path: Path, write: Callable[..., object], *args: Any) -> Path:
    """Call ``write(tmp, *args)`` and rename ``tmp`` to ``path`` (``args``: what a writer called in a loop needs,
    passed as values rather than bound late by a closure).

    The temporary file is hidden beside ``path`` and keeps its suffix (writers choose the format by it) and
    as much of its name as fits in :data:`NAME_MAX` bytes. Failing to write (no permission, a read-only or
    full file system, a folder in the way) is an :class:`OutputError` naming ``path``; the temporary file
    is gone either way.
    """
    path = Path(path)
    make_folder(path.parent)
    tmp = path.with_name(_temporary_name(path))
    try:
        write(tmp, *args)
        os.replace(tmp, path)
    except OSError as exc:
        raise output_error(exc, path) from None
    finally:
        discard(tmp)
    return path


def _temporary_name(path: Path) -> str:
    prefix, suffix = f".tmp-{os.getpid()}-{threading.get_native_id()}-", path.suffix  # one per writing thread
    room = NAME_MAX - len(prefix.encode()) - len(suffix.encode())
    if room < 0:  # a suffix as long as a name: keep the name's start instead
        room, suffix = NAME_MAX - len(prefix.encode()), ""
    return prefix + path.stem.encode()[:room].decode(errors="ignore") + suffix


def discard(path: Path) -> None:
    """Remove ``path`` if it is there (the file system may also refuse: it was never written, then)."""
    try:
        path.unlink()
    except OSError:
        pass


def make_folder(folder: Path) -> None:
    """Create ``folder`` and its parents; one line when that cannot be (a file in the way, no permission, a
    read-only or full file system)."""
    folder = Path(folder)
    for existing in (p for p in [folder, *folder.parents] if p.exists()):
        if not existing.is_dir():
            raise OutputError(f"{folder}: cannot be made, {existing} is a file" if existing != folder
                              else f"{folder}: is a file where a folder must be")
        break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, folder) from None


def read_json_object(path: Path, expected: str) -> dict[str, Any]:
    """The JSON object in ``path``; an :class:`InputError` naming the file where it cannot be read, is not JSON or
    is not an object (``expected`` says what it should hold)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark, as some editors write, is no error
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError, so are Python's integer limits
        raise InputError(f"{path}: cannot read it as JSON ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, {expected}")
    return data


def write_json(path: Path, obj: Any) -> Path:
    text = dumps(obj) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def dumps(obj: Any, indent: int = 0) -> str:
    """JSON with two-space indentation, keeping lists of numbers (matrix rows) on one line."""
    obj = _plain(obj)
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(v, (dict, list)) for v in obj):
            return json.dumps(obj)
        return "[\n" + ",\n".join(inner + dumps(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, np.ndarray)):
        return list(value) if isinstance(value, tuple) else value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
