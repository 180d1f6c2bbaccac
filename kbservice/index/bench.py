"""Dense search benchmark on a synthetic index: latency (p50/p95), recall@10 vs exact search, peak memory.

Random unit vectors are the hardest case for approximate search (no cluster structure to exploit), so
the figures are a floor for real embeddings.
"""

from __future__ import annotations

import gc
import resource
import statistics
import time
from collections.abc import Iterator
from typing import Any

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from kbservice.config import IndexSettings
from kbservice.index.faiss_index import build_index
from kbservice.index.protocols import VectorIndex

DIMENSION = 384  # the packaged embedder's
SWEEPS = {"pq": (16, 32, 64, 128), "hnsw": (128, 256, 512, 1024)}  # pq_k_factor / efSearch
# Vectors are generated, searched for ground truth and added this many at a time, so that 10M vectors
# (15.4 GB as float32) never sit in memory beside the index built from them.
CHUNK = 500_000


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    rows = rng.standard_normal((n, d), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def _stream(seed: int, n_vectors: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, unit vectors) in chunks; the same seed gives the same vectors on every pass."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_vectors, CHUNK):
        count = min(CHUNK, n_vectors - start)
        yield np.arange(start, start + count, dtype=np.int64), _unit_rows(rng, count, DIMENSION)


def _exact_top10(seed: int, n_vectors: int, queries: np.ndarray) -> np.ndarray:
    """Each query's exact 10 nearest ids, merged chunk by chunk."""
    best_scores = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), 10), -1, dtype=np.int64)
    for ids, vectors in _stream(seed, n_vectors):
        flat = faiss.IndexFlatIP(DIMENSION)
        flat.add(vectors)
        scores, rows = flat.search(queries, min(10, len(ids)))
        scores = np.hstack([best_scores, scores])
        found = np.hstack([best_ids, ids[rows]])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        best_scores, best_ids = np.take_along_axis(scores, order, 1), np.take_along_axis(found, order, 1)
    return best_ids


def _build(kind: str, seed: int, n_vectors: int, settings: IndexSettings) -> VectorIndex:
    """The service's own VectorIndex of `kind` over the stream: trained on the first chunk (PQ samples its
    codebooks' training set from it), then filled chunk by chunk."""
    chunks = _stream(seed, n_vectors)
    ids, vectors = next(chunks)
    index = build_index(dimension=DIMENSION, kind=kind, settings=settings, ids=ids, vectors=vectors)
    for ids, vectors in chunks:
        index.add(ids, vectors)
    return index


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_search_benchmark(
    *,
    n_vectors: int,
    n_queries: int,
    settings: IndexSettings,
    console: Console,
    kinds: tuple[str, ...] = ("pq",),
    seed: int = 7,
) -> dict[str, Any]:
    """Builds each index kind over `n_vectors` random unit vectors with the service's own VectorIndex and
    times single-query k=10 searches against exact ground truth."""
    queries = _unit_rows(np.random.default_rng(seed + 1), n_queries, DIMENSION)
    started = time.perf_counter()
    truth = _exact_top10(seed, n_vectors, queries)
    console.print(f"exact ground truth in {time.perf_counter() - started:.1f}s")
    gc.collect()
    result: dict[str, Any] = {"vectors": n_vectors, "queries": n_queries, "dimension": DIMENSION, "runs": []}
    table = Table(
        "kind",
        "param",
        "p50 ms",
        "p95 ms",
        "recall@10 vs exact",
        "build s",
        title=f"k=10 search, {n_vectors:,} random unit vectors (d={DIMENSION})",
    )
    for kind in kinds:
        started = time.perf_counter()
        index = _build(kind, seed, n_vectors, settings)
        build_s = round(time.perf_counter() - started, 1)
        console.print(f"built {kind} in {build_s}s (peak RSS so far {_peak_rss_mb()} MB)")
        for value in SWEEPS.get(kind, (0,)):
            index.ef_search, index.k_factor = value, value
            latencies, found = [], 0
            for query, expected in zip(queries, truth, strict=True):
                clock = time.perf_counter()
                hits = index.search(query, k=10)
                latencies.append((time.perf_counter() - clock) * 1000)
                found += len({i for i, _ in hits} & set(expected.tolist()))
            latencies.sort()
            run = {
                "kind": kind,
                "param": {"pq": "k_factor", "hnsw": "efSearch"}.get(kind, "-") + f"={value}",
                "p50_ms": round(statistics.median(latencies), 3),
                "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
                "recall@10": round(found / (10 * n_queries), 4),
                "build_s": build_s,
            }
            result["runs"].append(run)
            table.add_row(*(str(run[key]) for key in ("kind", "param", "p50_ms", "p95_ms", "recall@10", "build_s")))
        del index
        gc.collect()
    result["peak_rss_mb"] = _peak_rss_mb()
    console.print(table)
    console.print(f"peak RSS {result['peak_rss_mb']} MB (one chunk of vectors at a time, each index in turn)")
    return result
