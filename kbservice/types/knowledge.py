"""What crosses room boundaries about the knowledge base: documents and chunks, versions, hits, ingest and
index reports, audit entries and stored cases."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, ClassVar


@dataclass(frozen=True)
class Section:
    """A heading path and the character span of its body in the document text."""

    heading_path: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True)
class ParsedDocument:
    """One document as read from a file, before chunking. `text` is what offsets point into."""

    source_key: str  # identity: a changed document with the same key supersedes the old one
    source: str
    title: str
    text: str
    format: str
    publisher: str | None = None
    effective_date: str | None = None
    url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: str = "guideline"  # or CASE_KIND, or UNLABELLED_CASE_KIND


# Document kinds of cases. A case without a diagnosis (images awaiting a label) is its own kind: retrieval of
# similar cases asks for CASE_KIND only, so a case with no label to vote for never takes an evidence slot,
# while the image encoder's self-supervised pre-training still reads its images.
CASE_KIND = "case"
UNLABELLED_CASE_KIND = "unlabelled_case"


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it has an id: its span in the document and the text the embedder sees."""

    ordinal: int
    heading_path: tuple[str, ...]
    char_start: int
    char_end: int
    text: str
    context: str
    token_count: int

    @property
    def embed_text(self) -> str:
        return f"{self.context}\n{self.text}" if self.context else self.text


@dataclass(frozen=True)
class VersionInfo:
    version: int
    parent: int | None
    created_at: datetime
    author: str
    message: str
    content_hash: str
    documents: int
    chunks: int
    last_outbox_seq: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


@dataclass(frozen=True)
class DocumentInfo:
    document_id: int
    title: str
    source: str
    source_key: str
    format: str
    content_hash: str
    version_added: int
    version_removed: int | None
    chunks: int
    publisher: str | None = None
    effective_date: str | None = None
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk. `score` is the fused score in hybrid mode, else the ranker's own."""

    chunk_id: int
    document_id: int
    title: str
    source: str
    kind: str  # "guideline" or "case"
    heading_path: tuple[str, ...]
    text: str
    char_start: int
    char_end: int
    content_hash: str
    version_added: int
    score: float
    dense_rank: int | None = None
    lexical_rank: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["heading_path"] = list(self.heading_path)
        return data


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did. `version` is None when nothing changed (every document was identical)."""

    version: int | None
    added: list[str]
    superseded: list[str]
    unchanged: list[str]
    chunks: int
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), only with skip_bad
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IndexHealth:
    ok: bool
    sql_chunks: int
    index_vectors: int
    missing: list[int]
    orphans: list[int]
    applied_seq: int
    outbox_seq: int
    embedder_id: str
    index_kind: str
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PreparedDocument:
    """A parsed document with its chunks and their embeddings (rows of `embeddings`), ready to store."""

    parsed: ParsedDocument
    content_hash: str
    chunks: list[ChunkDraft]
    embeddings: Any  # numpy float32 array, one row per chunk
    case: dict[str, Any] | None = None  # the de-identified case fields, for kind "case"
    images: list[dict[str, Any]] = field(default_factory=list)  # `images` rows of the case (see imaging/prepare)


@dataclass(frozen=True)
class VersionDiff:
    from_version: int
    to_version: int
    documents_added: list[dict[str, Any]]
    documents_removed: list[dict[str, Any]]
    chunks_added: int
    chunks_removed: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AuditEntry:
    """One row of the hash-chained audit log. `payload` is canonical JSON, exactly as hashed."""

    seq: int
    created_at: str
    kind: str
    actor: str
    payload: str
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["payload"] = json.loads(self.payload)
        return data


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    entries: int
    first_bad_seq: int | None
    problem: str | None
    versions: int = 0  # version-log rows compared with their audit entries
    checkpoints: int = 0  # signed checkpoints the chain was checked against

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CaseRecord:
    """One stored case, after de-identification. `case_id` is the store's id, `id` the submitter's."""

    case_id: int
    id: str
    findings: str
    history: str | None
    age: str | None
    sex: str | None
    diagnosis: list[str]
    treatment: str | None
    images: list[str]
    labeled_by: str | None
    version_added: int
    document_id: int
    chunk_id: int
    content_hash: str

    # Where the case lives in the knowledge base: used by retrieval and citations, not part of its JSON.
    INTERNAL_FIELDS: ClassVar[tuple[str, ...]] = ("document_id", "chunk_id", "content_hash")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in self.INTERNAL_FIELDS:
            del data[name]
        return data
