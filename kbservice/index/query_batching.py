"""Coalesces single-query encodes from concurrent requests into one batch.

A transformer encodes 16 short queries in a small multiple of the time it takes for one, so under load
the requests that arrive while a batch is running are encoded together in the next one. No request waits
for company: with nobody else in line a query is encoded at once. Padding inside a batch can change a
vector in its last bits, never its meaning; stored recommendations replay from their recorded retrieval.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kbservice.index.protocols import Embedder, ProgressCallback


@dataclass
class _Pending:
    text: str
    vector: np.ndarray | None = None
    error: BaseException | None = None
    done: bool = False


class BatchingEmbedder:
    """An Embedder whose one-text `encode` calls share batches; other calls pass straight through."""

    def __init__(self, inner: Embedder, *, max_batch: int = 32) -> None:
        self.inner = inner
        self.embedder_id = inner.embedder_id
        self.dimension = inner.dimension
        self.max_tokens = inner.max_tokens
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._leading = False

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)

    def encode(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> np.ndarray:
        if len(texts) != 1 or progress is not None:
            return self.inner.encode(texts, progress=progress)
        item = _Pending(texts[0])
        with self._cond:
            self._pending.append(item)
        while True:
            with self._cond:
                while not item.done and self._leading:
                    self._cond.wait()
                if item.done:
                    break
                self._leading = True  # nobody is encoding: this thread runs the next batch
                batch = self._pending[: self.max_batch]
                del self._pending[: len(batch)]
            self._run(batch)
        if item.error is not None:
            raise item.error
        assert item.vector is not None
        return item.vector[None, :]

    def _run(self, batch: list[_Pending]) -> None:
        vectors, error = None, None
        try:
            vectors = self.inner.encode([p.text for p in batch])
        except BaseException as exc:  # every waiter gets the error, not just the leader
            error = exc
        with self._cond:
            for i, pending in enumerate(batch):
                pending.vector = vectors[i] if vectors is not None else None
                pending.error = error
                pending.done = True
            self._leading = False
            self._cond.notify_all()
