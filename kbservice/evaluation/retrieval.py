"""`eval retrieval`: on MedQuAD, does a question find its own answer document? Per mode, plus latency."""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from kbservice.errors import KBError
from kbservice.evaluation.medquad import MEDQUAD_FILE, MEDQUAD_SOURCE

if TYPE_CHECKING:
    from kbservice.services import Services

MODES = ("dense", "lexical", "hybrid")
_CHUNK_DEPTH = 50  # chunks fetched per query; ranked documents are their first occurrences


def evaluate_medquad(services: Services, *, corpus: Path, sample: int, seed: int, console: Console) -> dict[str, Any]:
    """Recall@1, recall@10 and MRR@10 per mode over a fixed random sample of MedQuAD questions, and hybrid
    k=10 latency percentiles, against the knowledge base built by `kbservice bench ingest`."""
    store = services.store
    head = store.head()
    if head is None:
        raise KBError("the knowledge base is empty; run `kbservice bench ingest` into this --data-dir first")
    docs = {d.source_key: d for d in store.documents(as_of=head.version)}
    questions: list[tuple[str, str]] = []
    with corpus.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    chosen = random.Random(seed).sample(range(len(rows)), sample)
    for index in chosen:
        doc = docs.get(f"{MEDQUAD_SOURCE}:{MEDQUAD_FILE}#a{index}")
        if doc is None:
            raise KBError(f"MedQuAD answer {index} is not in the knowledge base; ingest the whole corpus first")
        questions.append((rows[index]["question"], doc.content_hash))
    doc_hash = {d.document_id: d.content_hash for d in docs.values()}
    retriever = services.retriever
    retriever.search("warm up", k=10)
    results: dict[str, Any] = {"questions": len(questions), "documents": len(docs), "chunks": head.chunks}
    for mode in MODES:
        ranks = []
        for question, gold in questions:
            hits = retriever.search(question, k=_CHUNK_DEPTH, mode=mode).hits
            ranks.append(_rank(hits, gold, doc_hash))
        results[mode] = {
            "recall@1": round(sum(r == 1 for r in ranks) / len(ranks), 4),
            "recall@10": round(sum(r is not None and r <= 10 for r in ranks) / len(ranks), 4),
            "mrr@10": round(sum(1 / r for r in ranks if r is not None and r <= 10) / len(ranks), 4),
        }
    latencies = []
    for question, _ in questions:
        started = time.perf_counter()
        retriever.search(question, k=10, mode="hybrid")
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    results["hybrid_latency_ms"] = {
        "p50": round(statistics.median(latencies), 2),
        "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
    }
    table = Table("mode", "recall@1", "recall@10", "MRR@10", title=f"MedQuAD retrieval ({len(questions)} questions)")
    for mode in MODES:
        table.add_row(mode, *(f"{results[mode][m]:.3f}" for m in ("recall@1", "recall@10", "mrr@10")))
    console.print(table)
    console.print(
        f"hybrid k=10 latency: p50 {results['hybrid_latency_ms']['p50']} ms, "
        f"p95 {results['hybrid_latency_ms']['p95']} ms over {len(latencies)} queries"
    )
    return results


def _rank(hits, gold_hash: str, doc_hash: dict[int, str]) -> int | None:  # type: ignore[no-untyped-def]
    """1-based rank of the gold document among distinct documents; identical answer texts count as gold."""
    seen: set[int] = set()
    for hit in hits:
        if hit.document_id in seen:
            continue
        seen.add(hit.document_id)
        if doc_hash.get(hit.document_id) == gold_hash:
            return len(seen)
    return None
