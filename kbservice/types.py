"""Frozen dataclasses that cross room boundaries."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import numpy as np


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
    kind: str = "guideline"  # or "case"


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


# ----- recommendation requests and answers -----------------------------------------------------------------


@dataclass(frozen=True)
class RequestImage:
    """An image of a request, already read and normalised (no file, no header: nothing identifying)."""

    sha256: str  # of the normalised pixels
    pixels: np.ndarray  # uint8 (size, size)

    @classmethod
    def of(cls, pixels: np.ndarray) -> RequestImage:
        return cls(sha256=hashlib.sha256(pixels.tobytes()).hexdigest(), pixels=pixels)

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size": int(self.pixels.shape[0]),
            "pixels_b64": base64.b64encode(self.pixels.tobytes()).decode(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestImage:
        pixels = np.frombuffer(base64.b64decode(data["pixels_b64"]), dtype=np.uint8)
        return cls(sha256=data["sha256"], pixels=pixels.reshape(data["size"], data["size"]))


@dataclass(frozen=True)
class DifferentialEntry:
    """One candidate diagnosis of the differential, with the sources that support it."""

    diagnosis: str
    probability: float
    citations: list[str]


@dataclass(frozen=True)
class PlanSentence:
    text: str
    citations: list[str]
    method: str  # "generated" or "extracted"


@dataclass(frozen=True)
class TreatmentPlan:
    """The cited treatment plan: one sentence per treatment source. `diagnosis` is None (and left out of the
    JSON) when no plan was made, and `note` then says why."""

    diagnosis: str | None
    plan: str
    citations: list[str]
    sentences: list[PlanSentence]
    note: str | None = None

    @classmethod
    def of(cls, diagnosis: str, sentences: list[PlanSentence], *, note: str | None = None) -> TreatmentPlan:
        """A plan for `diagnosis` from its sentences: the text cites each sentence's sources."""
        return cls(
            diagnosis=diagnosis,
            plan=" ".join(f"{s.text} [{', '.join(s.citations)}]" for s in sentences),
            citations=list(dict.fromkeys(c for s in sentences for c in s.citations)),
            sentences=list(sentences),
            note=note,
        )

    @classmethod
    def none(cls, note: str | None) -> TreatmentPlan:
        """No plan (the recommendation abstained, ran without retrieval, or was asked without one)."""
        return cls(diagnosis=None, plan="", citations=[], sentences=[], note=note)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.diagnosis is None:
            del data["diagnosis"]
        return data


@dataclass(frozen=True)
class Source:
    """A retrieved guideline passage or case as the answer cites it (S1, S2, ...). A case carries its store
    id and diagnosis; a case found by image similarity also the image; guidelines carry neither."""

    id: str
    kind: str  # "guideline", "case" or "image_case"
    score: float
    content_hash: str
    chunk_id: int
    document_id: int
    title: str
    text: str
    case_id: int | None = None
    diagnosis: list[str] | None = None
    image_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in _SOURCE_OPTIONAL}


_SOURCE_OPTIONAL = ("case_id", "diagnosis", "image_id")


@dataclass(frozen=True)
class ImagesUsed:
    """The request's images: how many, their pixel hashes, whether they were used and by which encoder."""

    given: int
    sha256: list[str]
    used: bool
    encoder_version: str | None
    note: str | None = None


@dataclass(frozen=True)
class Provenance:
    """Everything that produced an answer, so it can be replayed."""

    knowledge_version: int
    index_build: str
    base_model: str
    base_model_sha256: str
    adapter_version: str | None
    encoder_version: str | None
    prompt_version: str
    calibration_id: int | None
    mode: str
    candidates: int
    created_at: str


@dataclass(frozen=True)
class Recommendation:
    """The main output: a differential with probabilities, a cited treatment plan, the sources, what the
    request's images contributed, and the provenance that replays it."""

    id: str
    differential: list[DifferentialEntry]
    abstained: bool
    reason: str | None
    treatment: TreatmentPlan
    sources: list[Source]
    images: ImagesUsed
    provenance: Provenance
    timings: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "differential": [asdict(entry) for entry in self.differential],
            "abstained": self.abstained,
            "reason": self.reason,
            "treatment": self.treatment.to_json(),
            "sources": [source.to_json() for source in self.sources],
            "images": asdict(self.images),
            "provenance": asdict(self.provenance),
            "timings": dict(self.timings),
        }


@dataclass(frozen=True)
class StoredRecommendation:
    """A stored answer with its de-identified request. `response` is the answer's JSON exactly as stored
    and hashed (answers stored by older versions keep their shape); `intact`: it still matches its audit row."""

    id: str
    created_at: str
    request: dict[str, Any]
    response: dict[str, Any]
    audit_seq: int
    intact: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReplayResult:
    recommendation_id: str
    identical: bool
    differences: list[str]
    retrieval_now_differs: bool  # searching again today, as of the same version, returns other rows
    replayed: Recommendation

    def to_json(self) -> dict[str, Any]:
        return {
            "recommendation_id": self.recommendation_id,
            "identical": self.identical,
            "differences": self.differences,
            "retrieval_now_differs": self.retrieval_now_differs,
            "replayed": self.replayed.to_json(),
        }


# ----- the learning loop -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseSplit:
    """How many cases an adapter candidate trains on (new + replayed older ones) and is judged on."""

    train: int
    heldout: int
    replay: int
    frozen: int


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]  # why the candidate may not replace the champion (empty: it may)
    checks: dict[str, Any]  # every check with its figures and margins


@dataclass(frozen=True)
class AdapterDecision:
    status: str  # "promoted" or "rejected"
    reason: str


@dataclass(frozen=True)
class UpdateReport:
    """What one update cycle did, stored with its run (and, up to the decision, with the adapter it built).

    Parts a cycle did not reach stay None and are left out of the JSON: a cycle on an empty knowledge base
    has no `data_watermark`; a skipped one no `split`; a run that has not finished no `status`."""

    run_id: str
    knowledge_version: int | None
    triggered_by: str
    reaped_adapters: list[str]
    reaped_runs: list[str]
    # What the cycle read (with the champion, which may be None: the base model serves).
    champion: str | None = None
    data_watermark: int | None = None
    new_cases: int | None = None
    encoder: dict[str, Any] | None = None  # the encoder stage's own report, when it ran
    # The adapter stage, once it builds a candidate (`image_fusion` may be None: no image projector).
    split: CaseSplit | None = None
    labels: dict[str, Any] | None = None  # the poisoning guard's report
    image_fusion: dict[str, Any] | None = None
    adapter_version: str | None = None
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None  # {"candidate": ..., "champion": ...}
    gate: GateResult | None = None
    timings: dict[str, float] | None = None
    calibration_id: int | None = None
    adapter_status: str | None = None
    decision: AdapterDecision | None = None
    # The run's end.
    status: str | None = None  # "promoted", "rejected", "skipped" or "failed"
    reason: str | None = None
    seconds: float | None = None
    peak_rss_mb: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        keep = {"run_id", "knowledge_version", "triggered_by", "reaped_adapters", "reaped_runs", "adapter_version"}
        if self.data_watermark is not None:
            keep.add("champion")
        if self.split is not None:
            keep.add("image_fusion")
        return {key: value for key, value in data.items() if value is not None or key in keep}
