"""Prometheus metrics. Route labels are route templates (`/v1/recommendations/{recommendation_id}`), never
raw paths, queries or keys, so no identifying data reaches a label.

Several uvicorn workers each count their own requests; `kbservice serve` points PROMETHEUS_MULTIPROC_DIR
at a folder so a scrape of any worker sums them all. Knowledge-base gauges are read from SQL at scrape time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kbservice.services import Services

REQUESTS = Counter(
    "kb_http_requests_total", "HTTP requests by route template and status.", ["method", "route", "status"]
)
REQUEST_SECONDS = Histogram(
    "kb_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RECOMMENDATION_SECONDS = Histogram(
    "kb_recommendation_duration_seconds",
    "Time to answer one recommendation (retrieval, scoring, treatment plan).",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
INGESTED_CHUNKS = Counter("kb_ingest_chunks_total", "Chunks ingested (guidelines and cases).")
INGEST_SECONDS = Counter("kb_ingest_seconds_total", "Seconds spent ingesting; rate(chunks)/rate(seconds) = throughput.")


def observe_ingest(report: dict) -> None:
    INGESTED_CHUNKS.inc(report.get("chunks", 0))
    INGEST_SECONDS.inc(report.get("seconds", 0.0))


class KnowledgeBaseCollector(Collector):
    """Gauges read when scraped: index size, outbox lag, knowledge version, champion, update runs."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[GaugeMetricFamily]:
        services = self.services
        replica = services.replica
        outbox = services.store.max_outbox_seq()
        yield GaugeMetricFamily("kb_index_vectors", "Vectors in this worker's index.", value=replica.index.size)
        yield GaugeMetricFamily(
            "kb_outbox_lag",
            "Outbox entries written to SQL but not yet applied to this worker's index.",
            value=max(0, outbox - replica.applied_seq),
        )
        head = services.store.head()
        yield GaugeMetricFamily("kb_knowledge_version", "Newest knowledge version.", value=head.version if head else 0)
        champion = GaugeMetricFamily("kb_champion_adapter", "1 for the champion adapter version.", labels=["version"])
        champion.add_metric([services.adapter_store.alias("champion") or "none"], 1)
        yield champion
        runs = GaugeMetricFamily("kb_update_runs", "Update cycles by outcome.", labels=["status"])
        counts = services.adapter_store.run_counts()  # a scrape reads counts, not every run's report
        for status in ("promoted", "rejected", "skipped", "failed", "running"):
            runs.add_metric([status], counts.get(status, 0))
        yield runs


def exposition(services: Services) -> bytes:
    """The text exposition: this process's (or all workers') counters plus the knowledge-base gauges."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        for metric in (REQUESTS, REQUEST_SECONDS, RECOMMENDATION_SECONDS, INGESTED_CHUNKS, INGEST_SECONDS):
            registry.register(metric)
    registry.register(KnowledgeBaseCollector(services))
    return generate_latest(registry)
