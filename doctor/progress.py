"""Progress bars on stderr for long work, shown only after half a second (a linter that
finishes at once should not flicker) and never when stderr is not a terminal."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator


def progress_factory(enabled: bool) -> Callable[..., contextlib.AbstractContextManager[Callable[[int], None]]]:
    """``with factory("Reading records", total) as advance: advance(1)``."""
    if not enabled:
        return _silent
    return _rich


@contextlib.contextmanager
def _silent(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    yield lambda n=1: None


@contextlib.contextmanager
def _rich(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    state: dict = {"progress": None, "task": None, "done": 0}
    started = time.monotonic()

    def advance(n: int = 1) -> None:
        state["done"] += n
        p = state["progress"]
        if p is None:
            if time.monotonic() - started < 0.5:
                return
            p = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                         MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                         TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True)
            p.start()
            state["progress"] = p
            state["task"] = p.add_task(description, total=total, completed=state["done"], rate="")
            return
        task = state["task"]
        elapsed = max(time.monotonic() - started, 1e-9)
        p.update(task, completed=state["done"], rate=f"{state['done'] / elapsed:,.0f}/s")

    try:
        yield advance
    finally:
        if state["progress"] is not None:
            state["progress"].stop()
