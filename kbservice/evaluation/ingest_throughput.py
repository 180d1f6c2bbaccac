"""`bench ingest`: the whole ingest vs bare torch SentenceTransformer.encode on the same chunk texts.

Both run in one process, one after the other, after a warm-up, so the ratio compares like with like.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kbservice.config import Settings
from kbservice.errors import KBError
from kbservice.evaluation.medquad import MEDQUAD_FILE, MEDQUAD_SOURCE, medquad_documents, write_jsonl
from kbservice.index.embedder import load_sentence_transformer, packaged_model_dir
from kbservice.ingest.guidelines import chunk_documents, ingest_guidelines
from kbservice.ingest.parsers import parse_file
from kbservice.services import build_services, initialise


def run_ingest_benchmark(
    *, corpus: Path, limit: int | None, settings: Settings, console: Console, slices: int = 8
) -> dict[str, Any]:
    """Ingests MedQuAD into `settings.data_dir` (must be empty) and prints ingest vs bare-encode throughput.

    The corpus is cut into `slices`; each slice is first bare-encoded, then ingested as its own version.
    Interleaving the two measurements makes any other load on the machine weigh on both alike.
    """
    initialise(settings)
    services = build_services(settings)
    if services.store.head() is not None:
        raise KBError(f"{settings.data_dir} already holds a knowledge base; benchmark into a fresh --data-dir")
    records = medquad_documents(corpus, limit=limit)
    started = time.perf_counter()
    embedder = services.embedder
    load_s = time.perf_counter() - started
    # The yardstick is always bare torch sentence-transformers on the configured model, whatever backend
    # the ingest itself runs on (an ONNX ingest is measured against what it replaces).
    encode = load_sentence_transformer(settings.embedder.model_path or packaged_model_dir()).encode
    bare_s = ingest_s = 0.0
    bare_chunks = ingested_chunks = tokens = 0
    stages: dict[str, float] = {}
    per_slice = -(-len(records) // slices)
    with tempfile.TemporaryDirectory() as temp:
        for number, start in enumerate(range(0, len(records), per_slice), start=1):
            folder = Path(temp) / f"slice{number}"
            folder.mkdir()
            path = write_jsonl(records[start : start + per_slice], folder)
            docs = parse_file(path, key=MEDQUAD_FILE, source=MEDQUAD_SOURCE, max_bytes=1 << 34)
            texts = [
                draft.embed_text
                for drafts in chunk_documents(docs, embedder=embedder, settings=settings)
                for draft in drafts
            ]
            tokens += sum(min(n + 2, embedder.max_tokens) for n in embedder.count_tokens(texts))
            if number == 1:
                encode(texts[:256], batch_size=settings.embedder.batch_size)  # warm-up, untimed
            clock = time.perf_counter()
            encode(texts, batch_size=settings.embedder.batch_size, normalize_embeddings=True, convert_to_numpy=True)
            bare_s += time.perf_counter() - clock
            bare_chunks += len(texts)
            clock = time.perf_counter()
            report = ingest_guidelines(
                [path],
                store=services.store,
                embedder=embedder,
                replica=services.replica,
                settings=settings,
                source=MEDQUAD_SOURCE,
                author="bench",
                message=f"MedQuAD answers, slice {number}",
            )
            ingest_s += time.perf_counter() - clock
            ingested_chunks += report.chunks
            for name, value in report.timings.items():
                stages[name] = stages.get(name, 0.0) + value
            console.print(
                f"slice {number}: {len(docs)} docs, {len(texts)} chunks; bare {bare_chunks / bare_s:.1f} "
                f"chunks/s, ingest {ingested_chunks / ingest_s:.1f} chunks/s so far"
            )
    result = {
        "embedder": embedder.embedder_id,
        "documents": len(records),
        "chunks": ingested_chunks,
        "tokens": tokens,
        "model_load_s": round(load_s, 2),
        "bare_encode_s": round(bare_s, 2),
        "bare_chunks_per_s": round(bare_chunks / bare_s, 1),
        "bare_tokens_per_s": round(tokens / bare_s, 0),
        "ingest_s": round(ingest_s, 2),
        "ingest_chunks_per_s": round(ingested_chunks / ingest_s, 1),
        "ingest_vs_bare": round((ingested_chunks / ingest_s) / (bare_chunks / bare_s), 3),
        "stages_s": {name: round(value, 2) for name, value in stages.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "versions": services.store.head().version,  # type: ignore[union-attr]
    }
    table = Table("figure", "value", title="ingest benchmark (MedQuAD)")
    for name, value in result.items():
        table.add_row(name, str(value))
    console.print(table)
    return result
