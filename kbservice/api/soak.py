"""A bounded soak: mixed traffic (search, recommend, ingest, one update cycle) against a running service for a
fixed time, with latency per route per time window, errors, and the resident memory of each worker over time.

It answers "does it stay healthy for hours?" in minutes: errors must stay at zero, p95 must not drift upward
window after window, and a worker's memory must stop growing after warm-up."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

# How the clients' requests are mixed (the update cycle is one extra request, started once).
ROUTE_WEIGHTS = {"search": 0.6, "recommend": 0.25, "ingest": 0.15}


@dataclass
class _Window:
    started_s: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    rss_mb: dict[int, float] = field(default_factory=dict)

    def record(self, route: str, seconds: float | None, label: str = "") -> None:
        if seconds is not None:
            self.latencies.setdefault(route, []).append(seconds)
        else:
            kinds = self.errors.setdefault(route, {})
            kinds[label] = kinds.get(label, 0) + 1

    def summary(self) -> dict[str, Any]:
        routes = sorted(set(self.latencies) | set(self.errors))
        return {
            "started_s": round(self.started_s, 1),
            "routes": {
                route: {
                    "requests": len(self.latencies.get(route, [])),
                    "errors": sum(self.errors.get(route, {}).values()),
                    "p95_ms": _p95(self.latencies.get(route, [])),
                }
                for route in routes
            },
            "rss_mb": [{"pid": pid, "mb": mb} for pid, mb in sorted(self.rss_mb.items())],
        }


def _p95(values: Sequence[float]) -> float | None:
    return round(float(np.percentile(np.array(values) * 1000, 95)), 1) if values else None


@dataclass(frozen=True)
class SoakPlan:
    seconds: float
    clients: int
    window_s: float
    warmup_s: float
    update_at_s: float | None  # when the one update cycle starts (None: none)
    queries: Sequence[str]
    cases: Sequence[dict[str, Any]]  # templates for ingested cases (findings, diagnosis)
    seed: int = 0


def _request(route: str, rng: random.Random, plan: SoakPlan, counter: int) -> dict[str, Any]:
    query = plan.queries[counter % len(plan.queries)]
    if route == "search":
        return {"method": "GET", "url": "/v1/search", "params": {"q": query, "k": 10}}
    if route == "recommend":
        case = plan.cases[counter % len(plan.cases)]
        return {"method": "POST", "url": "/v1/recommendations", "json": {"findings": case["findings"]}}
    case = plan.cases[rng.randrange(len(plan.cases))]
    new = {"id": f"soak-{int(time.time())}-{counter}-{rng.randrange(10**9)}", **case}
    new["findings"] = f"{case['findings']} Seen on soak visit {counter}."
    return {"method": "POST", "url": "/v1/cases", "json": [new]}


async def _run(url: str, key: str, plan: SoakPlan, rss: Callable[[], dict[int, float]]) -> dict[str, Any]:
    rng = random.Random(plan.seed)
    began = time.perf_counter()
    windows = [_Window(0.0, rss_mb=rss())]
    counter = iter(range(10**9))
    update: dict[str, Any] = {}
    routes, weights = list(ROUTE_WEIGHTS), list(ROUTE_WEIGHTS.values())
    limits = httpx.Limits(max_connections=plan.clients + 2, max_keepalive_connections=plan.clients + 2)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600, limits=limits
    ) as http:

        async def timed(route: str, request: dict[str, Any]) -> httpx.Response | None:
            started = time.perf_counter()
            try:
                response = await http.request(**request)
            except httpx.HTTPError as exc:
                windows[-1].record(route, None, type(exc).__name__)
                return None
            if response.status_code >= 400:
                windows[-1].record(route, None, str(response.status_code))
                return response
            windows[-1].record(route, time.perf_counter() - started)
            return response

        async def client() -> None:
            while time.perf_counter() - began < plan.seconds:
                route = rng.choices(routes, weights)[0]
                await timed(route, _request(route, rng, plan, next(counter)))

        async def update_cycle() -> None:
            assert plan.update_at_s is not None
            await asyncio.sleep(plan.update_at_s)
            started = time.perf_counter()
            response = await timed("update", {"method": "POST", "url": "/v1/updates", "json": {"reason": "soak"}})
            if response is None or response.status_code != 202:
                update.update(status="not started", http=getattr(response, "status_code", None))
                return
            job_id = response.json()["job_id"]
            while True:
                await asyncio.sleep(5)
                polled = await timed("job", {"method": "GET", "url": f"/v1/jobs/{job_id}"})
                if (
                    polled is not None
                    and polled.status_code == 200
                    and polled.json()["status"]
                    in (
                        "succeeded",
                        "failed",
                    )
                ):
                    job = polled.json()
                    result = job.get("result") or {}
                    update.update(
                        job=job["status"],
                        cycle=result.get("status"),
                        adapter_version=result.get("adapter_version"),
                        reason=result.get("reason") or job.get("error"),
                        started_s=round(started - began, 1),
                        seconds=round(time.perf_counter() - started, 1),
                    )
                    return

        async def windows_clock() -> None:
            while time.perf_counter() - began < plan.seconds:
                await asyncio.sleep(min(plan.window_s, max(0.0, plan.seconds - (time.perf_counter() - began))))
                windows[-1].rss_mb = rss()
                if time.perf_counter() - began < plan.seconds:
                    windows.append(_Window(time.perf_counter() - began))

        tasks = [client() for _ in range(plan.clients)] + [windows_clock()]
        if plan.update_at_s is not None:
            tasks.append(update_cycle())
        await asyncio.gather(*tasks)
    windows[-1].rss_mb = rss()
    return _report(url, plan, windows, update, time.perf_counter() - began)


def _report(url: str, plan: SoakPlan, windows: list[_Window], update: dict[str, Any], elapsed: float) -> dict[str, Any]:
    all_latencies: dict[str, list[float]] = {}
    errors: dict[str, dict[str, int]] = {}
    for window in windows:
        for route, values in window.latencies.items():
            all_latencies.setdefault(route, []).extend(values)
        for route, kinds in window.errors.items():
            for label, n in kinds.items():
                errors.setdefault(route, {})[label] = errors.setdefault(route, {}).get(label, 0) + n
    after_warmup = next((w for w in windows if w.started_s >= plan.warmup_s), windows[-1])
    baseline = windows[windows.index(after_warmup) - 1].rss_mb if windows.index(after_warmup) else windows[0].rss_mb
    end = windows[-1].rss_mb
    # A list keyed inside, not a dict keyed by pid: the report's shape must not change from run to run.
    worker_memory = [
        {
            "pid": pid,
            "rss_mb_after_warmup": baseline.get(pid),
            "rss_mb_end": mb,
            "rss_growth_pct": round(100 * (mb - baseline[pid]) / baseline[pid], 1) if baseline.get(pid) else None,
        }
        for pid, mb in sorted(end.items())
    ]
    return {
        "url": url,
        "seconds": round(elapsed, 1),
        "clients": plan.clients,
        "requests": sum(len(v) for v in all_latencies.values()),
        "errors": sum(sum(kinds.values()) for kinds in errors.values()),
        "error_kinds": errors,
        "routes": {
            route: {"requests": len(values), "p50_ms": _p50(values), "p95_ms": _p95(values)}
            for route, values in sorted(all_latencies.items())
        },
        "update": update,
        "worker_memory": worker_memory,
        "windows": [window.summary() for window in windows],
    }


def _p50(values: Sequence[float]) -> float | None:
    return round(float(np.percentile(np.array(values) * 1000, 50)), 1) if values else None


def run_soak(*, url: str, key: str, plan: SoakPlan, rss: Callable[[], dict[int, float]]) -> dict[str, Any]:
    """Runs the plan against the service at `url`; `rss` reads each worker's resident memory (MB) by pid."""
    return asyncio.run(_run(url, key, plan, rss))
