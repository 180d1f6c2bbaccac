"""The main output and what it is made of: a request's images, the differential, the cited treatment plan,
the sources, the provenance; stored answers and replays."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


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
    classifier_version: str | None = None  # the case classifier whose scores entered the fusion
    # The evidence groups the calibration's fusion was fitted on and their out-of-fold log-loss per case
    # (None: uncalibrated defaults, or a calibration stored before groups were recorded / not cross-validated).
    fusion_groups: list[str] | None = None
    fusion_out_of_fold_nll: float | None = None


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
