"""Request and response schemas: what the OpenAPI document promises and schemathesis checks."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last.")


class ProblemDetails(BaseModel):
    """RFC 9457 problem details; `type` is stable per kind of error."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    problems: list[dict[str, Any]] | None = None


# ----- knowledge ------------------------------------------------------------------------------------


class Version(BaseModel):
    version: int
    parent: int | None
    created_at: str
    author: str
    message: str
    content_hash: str
    documents: int
    chunks: int
    last_outbox_seq: int


class Document(BaseModel):
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


class VersionDetail(Version):
    documents_valid: list[Document] = Field(description="Guideline documents valid at this version.")


class VersionDiff(BaseModel):
    from_version: int
    to_version: int
    documents_added: list[dict[str, Any]]
    documents_removed: list[dict[str, Any]]
    chunks_added: int
    chunks_removed: int


class SearchHit(BaseModel):
    chunk_id: int
    document_id: int
    title: str
    source: str
    kind: str
    heading_path: list[str]
    text: str
    char_start: int
    char_end: int
    content_hash: str
    version_added: int
    score: float
    dense_rank: int | None = None
    lexical_rank: int | None = None


class SearchResult(BaseModel):
    version: int | None = Field(description="The knowledge version searched; null when the base is empty.")
    mode: str
    hits: list[SearchHit]


class IngestReport(BaseModel):
    version: int | None = Field(description="The new knowledge version; null when nothing changed.")
    added: list[str]
    superseded: list[str]
    unchanged: list[str]
    chunks: int
    rejected: list[list[str]] = []
    seconds: float
    timings: dict[str, float] = {}


class JobAccepted(BaseModel):
    job_id: str
    status: Literal["queued"]
    url: str


class Job(BaseModel):
    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    created_by: str
    result: Any = None
    error: dict[str, Any] | None = None


# ----- cases ----------------------------------------------------------------------------------------


class CaseIn(BaseModel):
    """One labelled case, as in a JSONL line of `kbservice ingest cases` (de-identified before storage)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=200)
    findings: str = Field(min_length=1)
    history: str | None = None
    age: int | str | None = None
    sex: Literal["F", "M"] | None = None
    diagnosis: str | list[str]
    treatment: str | None = None
    labeled_by: str | None = None


class Case(BaseModel):
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


# ----- recommendations ------------------------------------------------------------------------------


class RecommendationIn(BaseModel):
    """The same fields as `kbservice recommend`."""

    model_config = ConfigDict(extra="forbid")
    findings: str = Field(min_length=1, description="The patient's findings, in plain text.")
    history: str | None = None
    age: int | None = Field(None, ge=0, le=130)
    sex: Literal["F", "M"] | None = None
    as_of: int | None = Field(None, ge=1, le=2**31 - 1, description="Answer from the knowledge valid at this version.")
    adapter: str | None = Field(None, description="Adapter version, `champion`, `previous` or `none`.")
    mode: Literal["rag", "no-rag"] = "rag"
    with_treatment: bool = True


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class DifferentialEntry(_Open):
    diagnosis: str
    probability: float
    citations: list[str]


class Treatment(_Open):
    plan: str
    citations: list[str]
    sentences: list[dict[str, Any]]
    note: str | None = None


class Source(_Open):
    id: str
    kind: str
    score: float
    content_hash: str
    chunk_id: int
    document_id: int
    title: str
    text: str


class Provenance(_Open):
    knowledge_version: int | None
    index_build: str
    base_model: str
    base_model_sha256: str
    adapter_version: str | None
    prompt_version: str
    calibration_id: int | None
    mode: str
    created_at: str


class ImagesUsed(_Open):
    """The request's images (CLI requests may carry them): whether they were used, and by which encoder."""

    given: int
    sha256: list[str]
    used: bool
    encoder_version: str | None
    note: str | None = None


class Recommendation(BaseModel):
    id: str
    differential: list[DifferentialEntry]
    abstained: bool
    reason: str | None
    treatment: Treatment
    sources: list[Source]
    images: ImagesUsed | None = None  # None: answered before images were supported
    provenance: Provenance
    timings: dict[str, float]


class StoredRecommendation(BaseModel):
    id: str
    created_at: str
    request: dict[str, Any]
    response: Recommendation
    audit_seq: int
    intact: bool = Field(description="Whether the stored answer still matches its audited hash.")


class Replay(BaseModel):
    recommendation_id: str
    identical: bool
    differences: list[str]
    retrieval_now_differs: bool
    replayed: Recommendation


# ----- learning ---------------------------------------------------------------------------------------


class AdapterSummary(_Open):
    version: str
    status: str
    aliases: list[str]
    parent: str | None
    created_at: str | None
    metrics: dict[str, Any] | None


class AdapterDetail(AdapterSummary):
    knowledge_version: int
    hyperparameters: dict[str, Any]
    artifact_sha256: str | None
    report: dict[str, Any] | None


class AliasChange(BaseModel):
    champion: str | None
    previous: str | None


class UpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=500, description="Recorded in the audit log with the job id.")


# ----- audit and operations ---------------------------------------------------------------------------


class AuditEntry(BaseModel):
    seq: int
    created_at: str
    kind: str
    actor: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerification(BaseModel):
    ok: bool
    entries: int
    first_bad_seq: int | None
    problem: str | None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, dict[str, Any]]
