"""Request and response schemas: what the OpenAPI document promises and schemathesis checks."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

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
    mode: Literal["dense", "lexical", "hybrid"]
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
    image_ids: list[int] = Field([], description="The stored images (`GET /v1/images/{id}`), in the case's order.")


# ----- recommendations ------------------------------------------------------------------------------


class RecommendationIn(BaseModel):
    """The same fields as `kbservice recommend`."""

    model_config = ConfigDict(extra="forbid")
    findings: str = Field(
        "", description="The patient's findings, in plain text: required unless images are sent (multipart)."
    )
    history: str | None = None
    age: int | None = Field(None, ge=0, le=130)
    sex: Literal["F", "M"] | None = None
    as_of: int | None = Field(None, ge=1, le=2**31 - 1, description="Answer from the knowledge valid at this version.")
    adapter: str | None = Field(None, description="Adapter version, `champion`, `previous` or `none`.")
    mode: Literal["rag", "no-rag"] = "rag"
    with_treatment: bool = True


class _Open(BaseModel):
    """A part of an answer: unknown keys pass through, and the keys named in `omit_unset` appear only when
    the answer has them (a guideline source has no case_id; answers stored before a field existed lack it)."""

    model_config = ConfigDict(extra="allow")
    omit_unset: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _leave_out_unset(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        data = handler(self)
        for name in self.omit_unset - self.model_fields_set:
            data.pop(name, None)
        return data


class DifferentialEntry(_Open):
    diagnosis: str
    probability: float
    citations: list[str]


class PlanSentence(_Open):
    text: str
    citations: list[str]
    method: Literal["generated", "extracted"]


class Treatment(_Open):
    omit_unset = frozenset({"diagnosis"})
    diagnosis: str | None = Field(None, description="Absent when no plan was made (see `note`).")
    plan: str
    citations: list[str]
    sentences: list[PlanSentence]
    note: str | None = None


class Source(_Open):
    omit_unset = frozenset({"case_id", "diagnosis", "image_id"})
    id: str
    kind: Literal["guideline", "case", "image_case"]
    score: float
    content_hash: str
    chunk_id: int
    document_id: int
    title: str
    text: str
    case_id: int | None = Field(None, description="Cases only: the store's case id.")
    diagnosis: list[str] | None = Field(None, description="Cases only: the case's labels.")
    image_id: int | None = Field(None, description="Cases found by image similarity: the similar image.")


class Provenance(_Open):
    omit_unset = frozenset(
        {"encoder_version", "candidates", "classifier_version", "fusion_groups", "fusion_out_of_fold_nll"}
    )
    knowledge_version: int
    index_build: str
    base_model: str
    base_model_sha256: str
    adapter_version: str | None
    encoder_version: str | None = Field(None, description="The image encoder of any image evidence.")
    prompt_version: str
    calibration_id: int | None
    mode: Literal["rag", "no-rag"]
    candidates: int | None = Field(None, description="Candidate diagnoses scored (absent in older answers).")
    created_at: str
    classifier_version: str | None = Field(
        None, description="The case classifier whose scores entered the fusion (absent in older answers)."
    )
    fusion_groups: list[str] | None = Field(
        None,
        description="The evidence groups the calibration's fusion was fitted on (null: uncalibrated defaults; "
        "absent in older answers).",
    )
    fusion_out_of_fold_nll: float | None = Field(
        None,
        description="Their out-of-fold log-loss per held-out case when the groups were chosen by cross-validation.",
    )


class ImagesUsed(_Open):
    """The request's images: whether they were used, and by which encoder."""

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


# ----- API keys -------------------------------------------------------------------------------------------


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    role: Literal["reader", "clinician", "curator", "trainer", "auditor", "admin"]


class KeyInfo(BaseModel):
    name: str
    role: str
    created_at: str
    created_by: str
    revoked_at: str | None


class NewKey(BaseModel):
    name: str
    role: str
    key: str = Field(description="Shown once; only its hash is stored.")


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
    versions: int
    checkpoints: int


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, dict[str, Any]]


class ImageInfo(BaseModel):
    """A stored image's de-identified metadata (as `kbservice images show --json`, without server paths)."""

    id: int
    case_id: int
    case_external_id: str
    ordinal: int
    format: str
    modality: str | None
    source_shape: list[int]
    pixel_size: int
    sha256: str
    stored_path: str = Field(description="Where the de-identified file is kept, under the images folder.")
    deidentified: bool
    deid_method: str | None
    created_at: str | None
    header: Any = Field(description="DICOM: every header element as stored (after de-identification).")


class SimilarImage(BaseModel):
    image_id: int
    case_id: int
    case: str
    diagnosis: list[str]
    score: float


class SimilarImages(BaseModel):
    encoder_version: str | None
    knowledge_version: int | None
    note: str | None
    similar: list[SimilarImage]


class DescribeSource(SimilarImage):
    id: str
    kind: Literal["image_case"]
    title: str


class ImageDescription(BaseModel):
    """A draft findings text for review (not a report), with the similar prior cases it cites."""

    draft: str
    citations: list[str]
    sources: list[DescribeSource]
    encoder_version: str | None
    adapter_version: str | None
    image_tokens: bool = False
    knowledge_version: int | None = None
    note: str | None


class EncoderVersion(_Open):
    """An image encoder version (as `kbservice encoders list --json`)."""

    version: str
    status: str
    kind: str
    aliases: list[str]
    parent: str | None
    metrics: dict[str, Any] | None = None
    created_at: str | None = None


class SimilarIn(BaseModel):
    """The optional `request` part of `POST /images/similar`."""

    model_config = ConfigDict(extra="forbid")
    k: int = Field(5, ge=1, le=100, description="How many similar prior cases.")
    as_of: int | None = Field(None, ge=1, le=2**31 - 1, description="Cases valid at this version (default: newest).")


class DescribeIn(BaseModel):
    """The optional `request` part of `POST /describe`: no options yet (an unknown key is refused)."""

    model_config = ConfigDict(extra="forbid")
