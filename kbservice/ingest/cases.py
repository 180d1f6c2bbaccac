"""ingest_cases: a case file (parsed and checked by case_files) -> de-identified -> one knowledge version.

Every free-text field is scrubbed before anything is embedded or written, so SQL, the index and any later
training set only ever see placeholders. One bad row stops the whole file: nothing is stored.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path

from kbservice.config import Settings
from kbservice.db.secret_store import SecretStore
from kbservice.db.store import KnowledgeStore
from kbservice.errors import DuplicateIdentityError
from kbservice.imaging.deid_key import deid_key
from kbservice.index.protocols import Embedder
from kbservice.index.replica import IndexReplica
from kbservice.ingest import deid
from kbservice.ingest.case_files import FREE_TEXT_FIELDS, CaseDraft, parse_case_file
from kbservice.ingest.case_images import prepare_case_images
from kbservice.progress import NoProgress, Progress
from kbservice.types import (
    CASE_KIND,
    UNLABELLED_CASE_KIND,
    ChunkDraft,
    IngestReport,
    ParsedDocument,
    PreparedDocument,
)


def deidentify(draft: CaseDraft) -> CaseDraft:
    """The same case with every identifier in its free text replaced by a typed placeholder."""
    scrubbed = {
        name: deid.scrub(getattr(draft, name)).text if getattr(draft, name) else None for name in FREE_TEXT_FIELDS
    }
    return CaseDraft(
        id=draft.id,
        findings=scrubbed["findings"] or "",
        history=scrubbed["history"],
        age=draft.age,
        sex=draft.sex,
        diagnosis=draft.diagnosis,
        treatment=scrubbed["treatment"],
        images=draft.images,
        labeled_by=draft.labeled_by,
    )


def case_document(draft: CaseDraft, *, source: str) -> tuple[ParsedDocument, str]:
    """The case as a document of kind "case" (its text is what similarity search embeds), or, without a
    diagnosis, of kind "unlabelled_case" (never retrieved as evidence), and its hash."""
    text = draft.embed_text()
    content_hash = hashlib.sha256(json.dumps(draft.fields(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    doc = ParsedDocument(
        source_key=f"case:{draft.id}",
        source=source,
        title=f"Case {draft.id}",
        text=text,
        format="case",
        kind=CASE_KIND if draft.diagnosis else UNLABELLED_CASE_KIND,
    )
    return doc, content_hash


def ingest_cases(
    path: Path,
    *,
    store: KnowledgeStore,
    embedder: Embedder,
    replica: IndexReplica,
    settings: Settings,
    labeled_by: str | None = None,
    author: str = "unknown",
    source: str = "cases",
    progress: Progress | None = None,
    uploaded_images: Mapping[str, Path] | None = None,
) -> IngestReport:
    """Ingests every case in `path` as ONE new knowledge version, de-identified, or nothing at all.

    A case id that is already stored is an error (cases are never silently replaced). A row's image names
    are paths relative to `path`, or, given `uploaded_images` (a client's uploads: its file name -> where the
    file was written), names among those only: the client's paths are never this machine's to open."""
    progress = progress or NoProgress()
    started = time.perf_counter()
    drafts = parse_case_file(path, labeled_by=labeled_by, max_chars=settings.ingest.max_case_field_chars)
    stored = store.live_content_hashes([f"case:{d.id}" for d in drafts])
    if stored:
        raise DuplicateIdentityError(sorted(stored))
    timings = {"parse_s": time.perf_counter() - started}
    stage = time.perf_counter()
    with progress.task("De-identifying cases", total=len(drafts)) as advance:
        clean = []
        for draft in drafts:
            clean.append(deidentify(draft))
            advance(1)
    timings["deid_s"] = time.perf_counter() - stage
    stage = time.perf_counter()
    image_rows, clean = prepare_case_images(
        path,
        clean,
        settings=settings,
        deid_secret=lambda: deid_key(SecretStore(store.engine), settings),
        progress=progress,
        uploaded=uploaded_images,
    )
    if image_rows:
        timings["images_s"] = time.perf_counter() - stage
    stage = time.perf_counter()
    documents = [case_document(draft, source=source) for draft in clean]
    texts = [doc.text for doc, _ in documents]
    with progress.task("Embedding cases", total=len(texts)) as advance:
        vectors = embedder.encode(texts, progress=advance)
    timings["embed_s"] = time.perf_counter() - stage
    token_counts = embedder.count_tokens(texts)
    prepared = [
        PreparedDocument(
            parsed=doc,
            content_hash=content_hash,
            chunks=[_whole_text_chunk(doc.text, token_counts[i])],
            embeddings=vectors[i : i + 1],
            case=draft.fields(),
            images=image_rows.get(draft.id, []),
        )
        for i, ((doc, content_hash), draft) in enumerate(zip(documents, clean, strict=True))
    ]
    stage = time.perf_counter()
    info, added, _, _ = store.record_ingest(
        prepared=prepared,
        author=author,
        message=f"ingest {len(prepared)} case(s) from {path.name}",
        embedder_id=embedder.embedder_id,
        supersede=False,
    )
    timings["sql_s"] = time.perf_counter() - stage
    replica.catch_up()
    return IngestReport(
        version=info.version if info else None,
        added=added,
        superseded=[],
        unchanged=[],
        chunks=len(prepared),
        seconds=time.perf_counter() - started,
        timings=timings,
    )


def _whole_text_chunk(text: str, token_count: int) -> ChunkDraft:
    """A case is one chunk: its presentation is compared as a whole (the embedder truncates long ones)."""
    return ChunkDraft(
        ordinal=0,
        heading_path=(),
        char_start=0,
        char_end=len(text),
        text=text,
        context="",
        token_count=token_count,
    )
