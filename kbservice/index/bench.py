"""Dense search benchmark on a synthetic index: latency (p50/p95), recall@10 vs exact search, peak memory."""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from kbservice.config import IndexSettings
from kbservice.index.faiss_index import FaissVectorIndex

DIMENSION = 384  # the packaged embedder's


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    rows = rng.standard_normal((n, d), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def run_search_benchmark(
    *,
    n_vectors: int,
    n_queries: int,
    settings: IndexSettings,
    console: Console,
    seed: int = 7,
    ef_values: tuple[int, ...] = (64, 128, 256, 512),
) -> dict[str, Any]:
    """Builds an HNSW index of `n_vectors` random unit vectors through the service's own FaissVectorIndex
    and times single-query searches against exact ground truth."""
    rng = np.random.default_rng(seed)
    vectors = _unit_rows(rng, n_vectors, DIMENSION)
    queries = _unit_rows(rng, n_queries, DIMENSION)
    ids = np.arange(n_vectors, dtype=np.int64)

    exact = faiss.IndexFlatIP(DIMENSION)
    exact.add(vectors)
    started = time.perf_counter()
    _, truth = exact.search(queries, 10)
    exact_ms = (time.perf_counter() - started) * 1000 / n_queries
    del exact

    index = FaissVectorIndex.empty(dimension=DIMENSION, kind="hnsw", settings=settings)
    started = time.perf_counter()
    for start in range(0, n_vectors, 100_000):
        index.add(ids[start : start + 100_000], vectors[start : start + 100_000])
        console.print(
            f"  built {min(start + 100_000, n_vectors):,}/{n_vectors:,} in {time.perf_counter() - started:.0f}s"
        )
    build_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "vectors": n_vectors,
        "queries": n_queries,
        "hnsw_m": settings.hnsw_m,
        "ef_construction": settings.hnsw_ef_construction,
        "build_s": round(build_s, 1),
        "exact_ms_per_query_batched": round(exact_ms, 2),
        "runs": [],
    }
    for ef in ef_values:
        index.ef_search = ef
        latencies, found = [], 0
        for query, expected in zip(queries, truth, strict=True):
            started = time.perf_counter()
            hits = index.search(query, k=10)
            latencies.append((time.perf_counter() - started) * 1000)
            found += len({i for i, _ in hits} & set(expected.tolist()))
        latencies.sort()
        result["runs"].append(
            {
                "ef_search": ef,
                "p50_ms": round(statistics.median(latencies), 3),
                "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
                "recall@10": round(found / (10 * n_queries), 4),
            }
        )
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    table = Table(
        "efSearch",
        "p50 ms",
        "p95 ms",
        "recall@10 vs exact",
        title=f"HNSW search, {n_vectors:,} random unit vectors (d={DIMENSION})",
    )
    for run in result["runs"]:
        table.add_row(str(run["ef_search"]), str(run["p50_ms"]), str(run["p95_ms"]), str(run["recall@10"]))
    console.print(table)
    console.print(f"build {result['build_s']} s, peak RSS {result['peak_rss_mb']} MB")
    return result
