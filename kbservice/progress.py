"""Progress reporting for long work, without tying the core to a terminal library."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

# advance(n) moves the bar by n; advance(n, status="loss 0.41 · 230 tok/s") also shows a running status.
Advance = Callable[..., None]


class Progress(Protocol):
    """`with progress.task("Embedding chunks", total=n) as advance: advance(k)`."""

    def task(self, description: str, *, total: int): ...  # -> ContextManager[Advance]


class NoProgress:
    """Reports nothing: the default for library calls, tests, --quiet and non-terminals."""

    @contextmanager
    def task(self, description: str, *, total: int) -> Iterator[Advance]:
        yield lambda _n, status=None: None
