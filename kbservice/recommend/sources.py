"""Retrieved passages and cases as numbered sources (S1, S2, ...), and the record of what retrieval returned."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kbservice.recommend import evidence
from kbservice.recommend.prompts import PromptSource
from kbservice.recommend.treatment import extract_treatment_sentence
from kbservice.retrieve import reciprocal_rank_fusion
from kbservice.types import CaseRecord, Hit, Source


@dataclass(frozen=True)
class RetrievedSource:
    """A retrieved guideline passage or case, numbered for the prompt and for citations; it keeps the case
    it came from, which the prompt, the citation checks and the treatment plan read."""

    id: str
    kind: str
    score: float
    content_hash: str
    chunk_id: int
    document_id: int
    title: str
    text: str
    case: CaseRecord | None = None
    image_id: int | None = None  # kind "image_case": the prior image found similar

    def prompt_view(self) -> PromptSource:
        if self.case is None:
            return PromptSource(id=self.id, kind=self.kind, title=self.title, text=self.text)
        return PromptSource(
            id=self.id,
            kind="case",
            title=f"Prior case {self.case.id}" + (" (similar image)" if self.image_id is not None else ""),
            text=self.case.findings,
            diagnosis="; ".join(self.case.diagnosis),
        )

    def treatment_view(self) -> PromptSource:
        """For the treatment prompt: a case shows its recorded treatment."""
        if self.case is None:
            return self.prompt_view()
        return PromptSource(
            id=self.id,
            kind="case",
            title=f"Treatment of prior case {self.case.id} ({'; '.join(self.case.diagnosis)})",
            text=self.case.treatment or "",
        )

    def supports(self, label: str) -> bool:
        if self.case is not None:
            return evidence.candidate_key(label) in {evidence.candidate_key(d) for d in self.case.diagnosis}
        return label.casefold() in f"{self.title}\n{self.text}".casefold()

    def cited(self) -> Source:
        """The source as the answer cites it."""
        return Source(
            id=self.id,
            kind=self.kind,
            score=round(float(self.score), 6),
            content_hash=self.content_hash,
            chunk_id=self.chunk_id,
            document_id=self.document_id,
            title=self.title,
            text=self.text,
            case_id=self.case.case_id if self.case is not None else None,
            diagnosis=list(self.case.diagnosis) if self.case is not None else None,
            image_id=self.image_id,
        )


@dataclass(frozen=True)
class RetrievalRecord:
    """Exactly what retrieval returned, stored with the recommendation: replay recomputes the answer from
    it (each row re-read from SQL, its content hash re-checked), so an approximate index, or lexical
    statistics that moved as later versions were added, cannot make a faithful replay look different."""

    guideline: list[list] = field(default_factory=list)  # [chunk_id, score, dense_rank, lexical_rank]
    dense: list[list] = field(default_factory=list)  # similar cases: [chunk_id, cosine]
    lexical: list[list] = field(default_factory=list)  # similar cases: [chunk_id, lexical score]
    treatment: list[list] | None = None  # guideline hits for the treatment query; None until it runs
    images: list[list] = field(default_factory=list)  # similar images: [image_id, case_id, cosine]
    encoder_version: str | None = None  # the image encoder whose index found them
    # That encoder's class head on the request's images: [label, mean probability] per label it was trained on
    # (empty: no images, or an encoder without a head). Recorded, like the hits, so replay needs no encoder.
    image_head: list[list] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetrievalRecord:
        return cls(**data)


def treatment_sources(
    diagnosis: str, hits: list[Hit], sources: list[RetrievedSource]
) -> tuple[list[RetrievedSource], list[RetrievedSource]]:
    """Up to two guideline passages that name `diagnosis` and describe a treatment (treatment sections
    first), then the recorded treatments of similar cases with that diagnosis; and the request's sources
    with the passages that were not among them yet appended (numbered on)."""
    relevant = [h for h in hits if diagnosis.casefold() in f"{h.title}\n{h.text}".casefold()]
    treating = [h for h in relevant if extract_treatment_sentence(h.text, diagnosis)]
    sources = list(sources)
    by_chunk = {s.chunk_id: s for s in sources}
    chosen: list[RetrievedSource] = []
    for hit in sorted(treating, key=lambda h: not is_treatment_section(h))[:2]:
        source = by_chunk.get(hit.chunk_id)
        if source is None:
            source = guideline_source(f"S{len(sources) + 1}", hit)
            sources.append(source)
            by_chunk[hit.chunk_id] = source
        chosen.append(source)
    chosen += [s for s in sources if s.case is not None and s.case.treatment and s.supports(diagnosis)]
    return chosen, sources


def is_treatment_section(hit: Hit) -> bool:
    return any(w in " ".join(hit.heading_path).lower() for w in ("treat", "manag", "therap"))


def guideline_source(source_id: str, hit: Hit) -> RetrievedSource:
    return RetrievedSource(
        id=source_id,
        kind="guideline",
        score=hit.score,
        content_hash=hit.content_hash,
        chunk_id=hit.chunk_id,
        document_id=hit.document_id,
        title=hit.title,
        text=hit.text,
    )


def number_sources(
    guideline_hits: list[Hit],
    dense: list[tuple[int, float]],
    lexical: list[tuple[int, float]],
    cases_by_chunk: dict[int, CaseRecord],
    *,
    rrf_k: int,
) -> list[RetrievedSource]:
    """Guideline passages first, then every evidence case in fused (reciprocal-rank) order: S1, S2, ..."""
    sources = [guideline_source(f"S{i}", hit) for i, hit in enumerate(guideline_hits, start=1)]
    fused = reciprocal_rank_fusion([[cid for cid, _ in dense], [cid for cid, _ in lexical]], rrf_k=rrf_k)
    for chunk_id, score, _ in fused:
        case = cases_by_chunk.get(chunk_id)
        if case is None:
            continue
        sources.append(
            RetrievedSource(
                id=f"S{len(sources) + 1}",
                kind="case",
                score=score,
                content_hash=case.content_hash,
                chunk_id=chunk_id,
                document_id=case.document_id,
                title=f"Case {case.id}",
                text=case.findings,
                case=case,
            )
        )
    return sources


def image_case_sources(hits: list[list], cases: dict[int, CaseRecord], *, start: int) -> list[RetrievedSource]:
    """Prior cases found by image similarity ([image_id, case_id, cosine] rows), numbered from S{start}."""
    sources = []
    for image_id, case_id, score in hits:
        case = cases.get(int(case_id))
        if case is None:
            continue
        sources.append(
            RetrievedSource(
                id=f"S{start + len(sources)}",
                kind="image_case",
                score=float(score),
                content_hash=case.content_hash,
                chunk_id=case.chunk_id,
                document_id=case.document_id,
                title=f"Case {case.id} (similar image)",
                text=case.findings,
                case=case,
                image_id=int(image_id),
            )
        )
    return sources
