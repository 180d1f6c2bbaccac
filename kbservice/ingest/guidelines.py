"""ingest_guidelines: files -> parsed documents -> chunks -> embeddings -> one knowledge version."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from kbservice.config import Settings
from kbservice.db.store import KnowledgeStore
from kbservice.errors import IngestError
from kbservice.index.protocols import Embedder
from kbservice.index.replica import IndexReplica
from kbservice.ingest.chunking import chunk_document
from kbservice.ingest.parsers import ParseError, discover_files, parse_file
from kbservice.progress import NoProgress, Progress
from kbservice.types import ChunkDraft, IngestReport, ParsedDocument, PreparedDocument


def document_hash(doc: ParsedDocument) -> str:
    """Identifies a document's content: title, text and citation metadata (not where it was read from)."""
    payload = [doc.title, doc.text, doc.publisher, doc.effective_date, doc.url]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def parse_inputs(
    paths: list[Path], *, source: str | None, max_bytes: int, skip_bad: bool
) -> tuple[list[ParsedDocument], list[tuple[str, str]]]:
    """Parses every file under `paths`. Returns (documents, problems); raises IngestError on any problem
    unless `skip_bad`, so by default one bad file stops the whole batch before anything is written."""
    documents: list[ParsedDocument] = []
    problems: list[tuple[str, str]] = []
    files = discover_files(paths)
    if not files:
        raise IngestError([(", ".join(map(str, paths)), "no files found")])
    for path, key in files:
        try:
            documents.extend(parse_file(path, key=key, source=source, max_bytes=max_bytes))
        except ParseError as exc:
            problems.append((str(path), str(exc)))
    seen: dict[str, int] = {}
    for doc in documents:
        seen[doc.source_key] = seen.get(doc.source_key, 0) + 1
    shared = {key for key, count in seen.items() if count > 1}
    problems.extend((key, f"{seen[key]} documents in this batch share this identity") for key in sorted(shared))
    documents = [doc for doc in documents if doc.source_key not in shared]
    if problems and not skip_bad:
        raise IngestError(problems)
    if not documents:
        raise IngestError(problems or [(", ".join(map(str, paths)), "no documents found")])
    return documents, problems


def chunk_documents(
    documents: list[ParsedDocument], *, embedder: Embedder, settings: Settings
) -> list[list[ChunkDraft]]:
    """Each document's chunks, bounded by the smaller of the configured and the embedder's token limit."""
    max_tokens = min(settings.chunking.max_tokens, embedder.max_tokens)
    return [
        chunk_document(
            text=doc.text,
            title=doc.title,
            count_tokens=embedder.count_tokens,
            max_tokens=max_tokens,
            overlap_tokens=settings.chunking.overlap_tokens,
        )
        for doc in documents
    ]


def prepare_documents(
    documents: list[ParsedDocument],
    *,
    content_hashes: list[str],
    embedder: Embedder,
    settings: Settings,
    progress: Progress,
) -> tuple[list[PreparedDocument], dict[str, float]]:
    """Chunks and embeds `documents` (all chunks in one length-sorted encode), timing each stage."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    drafts = chunk_documents(documents, embedder=embedder, settings=settings)
    timings["chunk_s"] = time.perf_counter() - started
    texts = [draft.embed_text for doc_drafts in drafts for draft in doc_drafts]
    started = time.perf_counter()
    with progress.task("Embedding chunks", total=len(texts)) as advance:
        vectors = embedder.encode(texts, progress=advance)
    timings["embed_s"] = time.perf_counter() - started
    prepared: list[PreparedDocument] = []
    offset = 0
    for doc, content_hash, doc_drafts in zip(documents, content_hashes, drafts, strict=True):
        prepared.append(
            PreparedDocument(
                parsed=doc,
                content_hash=content_hash,
                chunks=doc_drafts,
                embeddings=vectors[offset : offset + len(doc_drafts)],
            )
        )
        offset += len(doc_drafts)
    return prepared, timings


def ingest_guidelines(
    paths: list[Path],
    *,
    store: KnowledgeStore,
    embedder: Embedder,
    replica: IndexReplica,
    settings: Settings,
    source: str | None = None,
    author: str = "unknown",
    message: str | None = None,
    skip_bad: bool = False,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingests guideline files as ONE new knowledge version (or none, if nothing changed).

    A bad file stops the batch before anything is written, unless `skip_bad` (then the good files form
    the version and the bad ones are reported). The version is committed in one SQL transaction with its
    outbox entries; the index replica then applies them and writes a snapshot.
    """
    progress = progress or NoProgress()
    started = time.perf_counter()
    documents, problems = parse_inputs(
        paths, source=source, max_bytes=int(settings.ingest.max_file_mb * 1e6), skip_bad=skip_bad
    )
    parse_s = time.perf_counter() - started
    live = store.live_content_hashes([doc.source_key for doc in documents])
    hashes = [document_hash(doc) for doc in documents]
    changed = [(doc, h) for doc, h in zip(documents, hashes, strict=True) if live.get(doc.source_key) != h]
    skipped = [doc.source_key for doc, h in zip(documents, hashes, strict=True) if live.get(doc.source_key) == h]
    prepared, timings = prepare_documents(
        [doc for doc, _ in changed],
        content_hashes=[h for _, h in changed],
        embedder=embedder,
        settings=settings,
        progress=progress,
    )
    timings["parse_s"] = parse_s
    stage = time.perf_counter()
    info, added, superseded, unchanged = store.record_ingest(
        prepared=prepared,
        author=author,
        message=message or f"ingest {len(changed)} document(s)",
        embedder_id=embedder.embedder_id,
    )
    timings["sql_s"] = time.perf_counter() - stage
    stage = time.perf_counter()
    replica.catch_up()
    timings["index_s"] = time.perf_counter() - stage
    return IngestReport(
        version=info.version if info else None,
        added=added,
        superseded=superseded,
        unchanged=skipped + unchanged,
        chunks=sum(len(p.chunks) for p in prepared) if info else 0,
        rejected=problems,
        seconds=time.perf_counter() - started,
        timings=timings,
    )
