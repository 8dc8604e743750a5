"""Progress of a long read: a Rich bar (rate, ETA when the total is known) on a terminal, a
plain line every few seconds otherwise (a log file or CI keeps readable lines, not redraws)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

PLAIN_EVERY_S = 5.0

Advance = Callable[[int], None]


class RateColumn(ProgressColumn):
    """Items per second (Rich's own speed column counts bytes)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} {self.unit}/s")


@contextmanager
def progress(
    console: Console,
    description: str,
    unit: str,
    total: int | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    every_s: float = PLAIN_EVERY_S,
) -> Iterator[Advance]:
    """Yield `advance(n)`, to call as work is done; report progress while the block runs."""
    if console.is_terminal:
        columns = [
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn() if total else TextColumn("{task.completed:,} " + unit),
            TaskProgressColumn(),
            RateColumn(unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(description, total=total)

            def advance_bar(n: int) -> None:
                bar.advance(task, n)

            yield advance_bar
        return
    started = last = clock()
    done = 0

    def advance_plain(n: int) -> None:
        nonlocal done, last
        done += n
        now = clock()
        if now - last >= every_s:
            last = now
            rate = done / max(now - started, 1e-9)
            of = f"/{total:,}" if total else ""
            console.print(f"{description}: {done:,}{of} {unit} ({rate:,.0f} {unit}/s)")

    yield advance_plain
