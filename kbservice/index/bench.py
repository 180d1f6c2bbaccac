"""Dense search benchmark on a synthetic index: latency (p50/p95), recall@10 vs exact search, peak memory.

Random unit vectors are the hardest case for approximate search (no cluster structure to exploit), so
the figures are a floor for real embeddings.
"""

from __future__ import annotations

import gc
import resource
import statistics
import time
from typing import Any

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from kbservice.config import IndexSettings
from kbservice.index.faiss_index import build_index

DIMENSION = 384  # the packaged embedder's
SWEEPS = {"pq": (16, 32, 64, 128), "hnsw": (128, 256, 512, 1024)}  # pq_k_factor / efSearch


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    rows = rng.standard_normal((n, d), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


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
    rng = np.random.default_rng(seed)
    vectors = _unit_rows(rng, n_vectors, DIMENSION)
    queries = _unit_rows(rng, n_queries, DIMENSION)
    ids = np.arange(n_vectors, dtype=np.int64)
    exact = faiss.IndexFlatIP(DIMENSION)
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    del exact
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
        index = build_index(dimension=DIMENSION, kind=kind, settings=settings, ids=ids, vectors=vectors)
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
    console.print(f"peak RSS {result['peak_rss_mb']} MB (vectors, ground truth and each index in turn)")
    return result
