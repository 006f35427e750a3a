"""Progress bars for long steps (rich), silenced when not wanted."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate with a rich progress bar (count, elapsed, ETA)."""
    if not enabled:
        yield from items
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total if total is not None else (len(items) if hasattr(items, "__len__") else None))  # type: ignore[arg-type]
        for item in items:
            yield item
            progress.advance(task)
