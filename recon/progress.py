"""Progress bars and the console, shared by every command (rich, on stderr).

Library code reports progress through :func:`track` and :func:`task`; when
recon is used as a library with progress disabled, they cost nothing. Tasks
opened while another is running share its display (an evaluation's overall
bar above the bars of the stage it is running), since a terminal holds one
live display at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
_enabled = True
_active: Progress | None = None
T = TypeVar("T")


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
        disable=not _enabled or not console.is_terminal,
    )


class Task:
    def __init__(self, progress: Progress | None, task_id: TaskID | None):
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: float = 1.0) -> None:
        if self._progress is not None and self._task_id is not None:
            self._progress.advance(self._task_id, amount)

    def update(self, description: str) -> None:
        if self._progress is not None and self._task_id is not None:
            self._progress.update(self._task_id, description=description)


@contextmanager
def task(description: str, total: float) -> Iterator[Task]:
    """A progress bar for ``total`` units of work; call ``advance()`` as they finish."""
    global _active
    if _active is not None:
        progress = _active
        task_id = progress.add_task(description, total=total)
        try:
            yield Task(progress, task_id)
        finally:
            progress.remove_task(task_id)
        return
    with _progress() as progress:
        _active = progress
        try:
            yield Task(progress, progress.add_task(description, total=total))
        finally:
            _active = None


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    items = list(items) if total is None else items
    with task(description, total if total is not None else len(items)) as t:  # type: ignore[arg-type]
        for item in items:
            yield item
            t.advance()
