"""Concurrent single-query encodes share batches and each get their own query's vector."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from kbservice.index.embedder import SentenceTransformerEmbedder
from kbservice.index.query_batching import BatchingEmbedder
from tests.index.test_embedder_contract import EmbedderContract


class CountingEmbedder:
    """The real tiny embedder, counting its calls (and failing on demand)."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.embedder_id, self.dimension, self.max_tokens = inner.embedder_id, inner.dimension, inner.max_tokens
        self.calls: list[int] = []
        self.fail = False
        self.gate = threading.Event()
        self.entered = 0  # texts handed to encode so far (the first call waits at the gate)

    def count_tokens(self, texts):  # type: ignore[no-untyped-def]
        return self.inner.count_tokens(texts)

    def encode(self, texts, *, progress=None):  # type: ignore[no-untyped-def]
        self.entered += len(texts)
        self.gate.wait(5)  # the first call holds until every thread has queued behind it
        self.calls.append(len(texts))
        if self.fail:
            raise RuntimeError("encoder failed")
        return self.inner.encode(texts, progress=progress)


@pytest.fixture
def counting(tiny_embedder_dir: Path) -> CountingEmbedder:
    return CountingEmbedder(SentenceTransformerEmbedder(tiny_embedder_dir, batch_size=64))


def _run_concurrently(batching: BatchingEmbedder, texts: list[str], counting: CountingEmbedder) -> list:  # type: ignore[type-arg]
    results: list = [None] * len(texts)

    def one(i: int) -> None:
        try:
            results[i] = batching.encode([texts[i]])
        except RuntimeError as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    while counting.entered + len(batching._pending) < len(texts):  # all in flight or queued
        threading.Event().wait(0.01)
    counting.gate.set()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_queries_share_batches_and_get_their_own_vectors(counting: CountingEmbedder) -> None:
    texts = [f"query number {i} about asthma and inhalers" for i in range(12)]
    results = _run_concurrently(BatchingEmbedder(counting, max_batch=8), texts, counting)
    alone = counting.inner.encode(texts)
    for i, vector in enumerate(results):
        assert vector.shape == (1, counting.dimension)
        np.testing.assert_allclose(vector[0], alone[i], atol=1e-5)
    # The first batch holds whoever had queued when it began; the rest queued behind it share batches.
    assert sum(counting.calls) == 12 and max(counting.calls) <= 8 and len(counting.calls) <= 3


def test_a_failed_batch_fails_every_query_in_it(counting: CountingEmbedder) -> None:
    counting.fail = True
    results = _run_concurrently(BatchingEmbedder(counting), [f"q{i}" for i in range(5)], counting)
    assert all(isinstance(r, RuntimeError) for r in results)


def test_batches_pass_through(counting: CountingEmbedder) -> None:
    counting.gate.set()
    vectors = BatchingEmbedder(counting).encode(["a", "b", "c"])
    assert vectors.shape == (3, counting.dimension) and counting.calls == [3]


class TestCountingEmbedderKeepsTheContract(EmbedderContract):
    """The spy the tests above use is an Embedder too: it must behave as one."""

    @pytest.fixture
    def embedder(self, tiny_embedder_dir: Path) -> CountingEmbedder:
        spy = CountingEmbedder(SentenceTransformerEmbedder(tiny_embedder_dir))
        spy.gate.set()
        return spy
