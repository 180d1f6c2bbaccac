"""Ingest benchmark: the whole ingest vs bare SentenceTransformer.encode on the same chunk texts.

Both run in one process, one after the other, after a warm-up, so the ratio compares like with like.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kbservice.config import Settings
from kbservice.errors import KBError
from kbservice.ingest.chunking import chunk_document
from kbservice.ingest.guidelines import ingest_guidelines
from kbservice.ingest.parsers import parse_file
from kbservice.services import build_services, initialise

MEDQUAD_SOURCE = "medquad"
MEDQUAD_FILE = "medquad.jsonl"


def medquad_documents(corpus: Path, *, limit: int | None = None) -> list[dict[str, Any]]:
    """MedQuAD answers as kbservice JSONL records: one document per answer, titled by its focus.

    The question is not part of the document, so retrieving an answer for its question is a real test.
    """
    if not corpus.exists():
        raise KBError(f"{corpus} not found (the MedQuAD file from ../shared/data/medquad)")
    records = []
    with corpus.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle):
            if limit is not None and len(records) >= limit:
                break
            row = json.loads(line)
            records.append(
                {
                    "id": f"a{line_number}",
                    "title": row.get("focus") or row["qtype"],
                    "text": row["answer"],
                    "url": row.get("url"),
                    "publisher": row.get("source"),
                    "qtype": row.get("qtype"),
                }
            )
    return records


def write_jsonl(records: list[dict[str, Any]], folder: Path) -> Path:
    path = folder / MEDQUAD_FILE
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def run_ingest_benchmark(*, corpus: Path, limit: int | None, settings: Settings, console: Console) -> dict[str, Any]:
    """Ingests MedQuAD into `settings.data_dir` (must be empty) and prints ingest vs bare-encode throughput."""
    initialise(settings)
    services = build_services(settings)
    if services.store.head() is not None:
        raise KBError(f"{settings.data_dir} already holds a knowledge base; benchmark into a fresh --data-dir")
    records = medquad_documents(corpus, limit=limit)
    started = time.perf_counter()
    embedder = services.embedder
    load_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as temp:
        path = write_jsonl(records, Path(temp))
        max_tokens = min(settings.chunking.max_tokens, embedder.max_tokens)
        docs = parse_file(path, key=MEDQUAD_FILE, source=MEDQUAD_SOURCE, max_bytes=1 << 34)
        texts = [
            draft.embed_text
            for doc in docs
            for draft in chunk_document(
                text=doc.text,
                title=doc.title,
                count_tokens=embedder.count_tokens,
                max_tokens=max_tokens,
                overlap_tokens=settings.chunking.overlap_tokens,
            )
        ]
        console.print(f"{len(records)} documents -> {len(texts)} chunks; warming up")
        embedder.model.encode(texts[:256], batch_size=settings.embedder.batch_size)  # type: ignore[attr-defined]
        console.print("bare SentenceTransformer.encode …")
        started = time.perf_counter()
        embedder.model.encode(  # type: ignore[attr-defined]
            texts, batch_size=settings.embedder.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        bare_s = time.perf_counter() - started
        console.print("whole ingest (parse, chunk, embed, SQL + outbox, index, snapshot) …")
        started = time.perf_counter()
        report = ingest_guidelines(
            [path],
            store=services.store,
            embedder=embedder,
            replica=services.replica,
            settings=settings,
            source=MEDQUAD_SOURCE,
            author="bench",
            message="MedQuAD answers",
        )
        ingest_s = time.perf_counter() - started
    tokens = sum(
        embedder.count_tokens(texts[i : i + 2048]) and sum(embedder.count_tokens(texts[i : i + 2048]))
        for i in range(0, len(texts), 2048)
    )
    result = {
        "documents": len(records),
        "chunks": report.chunks,
        "tokens": tokens,
        "model_load_s": round(load_s, 2),
        "bare_encode_s": round(bare_s, 2),
        "bare_chunks_per_s": round(len(texts) / bare_s, 1),
        "ingest_s": round(ingest_s, 2),
        "ingest_chunks_per_s": round(report.chunks / ingest_s, 1),
        "ingest_vs_bare": round((report.chunks / ingest_s) / (len(texts) / bare_s), 3),
        "stages_s": {name: round(value, 2) for name, value in report.timings.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "version": report.version,
    }
    table = Table("figure", "value", title="ingest benchmark (MedQuAD)")
    for name, value in result.items():
        table.add_row(name, str(value))
    console.print(table)
    return result
