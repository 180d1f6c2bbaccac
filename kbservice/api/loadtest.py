"""A small asyncio load generator: N clients, each sending its next request when the last one returns."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

_FALLBACK_QUERIES = [
    "What are the symptoms of asthma?",
    "How is type 2 diabetes treated?",
    "What causes high blood pressure?",
    "Is pneumonia contagious?",
]


def load_queries(path: Path, *, limit: int = 2000, seed: int = 0) -> list[str]:
    """MedQuAD questions (shuffled, fixed seed), or a few fixed questions when the file is absent."""
    if not path.exists():
        return list(_FALLBACK_QUERIES)
    questions = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            question = json.loads(line).get("question")
            if question:
                questions.append(question)
    random.Random(seed).shuffle(questions)
    return questions[:limit] or list(_FALLBACK_QUERIES)


def _request(kind: str, query: str) -> dict[str, Any]:
    if kind == "search":
        return {"method": "GET", "url": "/v1/search", "params": {"q": query, "k": 10}}
    return {"method": "POST", "url": "/v1/recommendations", "json": {"findings": query, "with_treatment": False}}


async def _level(url: str, key: str, kind: str, clients: int, seconds: float, queries: list[str]) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300, limits=limits
    ) as http:

        async def client() -> None:
            while time.perf_counter() < deadline:
                query = queries[next(counter) % len(queries)]
                started = time.perf_counter()
                try:
                    response = await http.request(**_request(kind, query))
                    ok = response.status_code < 400
                    label = str(response.status_code)
                except httpx.HTTPError as exc:
                    ok, label = False, type(exc).__name__
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[label] = errors.get(label, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    values = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": round(elapsed, 2),
        "throughput": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "p99_ms": float(np.percentile(values, 99)),
    }


def run_load(*, url: str, key: str, kind: str, levels: list[int], seconds: float, queries_file: Path) -> dict[str, Any]:
    """Each concurrency level in turn (after a short warm-up), measured from this process."""
    queries = load_queries(queries_file)
    asyncio.run(_level(url, key, kind, 1, min(3.0, seconds), queries[-50:]))  # warm-up, not reported
    rows = [asyncio.run(_level(url, key, kind, n, seconds, queries)) for n in levels]
    return {"url": url, "kind": kind, "seconds_per_level": seconds, "levels": rows}
