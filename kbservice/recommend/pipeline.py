"""The RAG pipeline: retrieve -> prompt -> score candidates -> fuse and calibrate -> plan treatment -> cite.

`Recommender.answer` answers one cleaned request with the `Recommendation` that the CLI prints, the API
returns and the audit stores; `Recommender.features` is the part shared with calibration, evaluation, the
update cycle and the benchmarks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from kbservice.classifier.model import CaseClassifier, case_text
from kbservice.config import ImagingSettings, RecommendSettings
from kbservice.db.case_store import CaseStore
from kbservice.errors import KBError
from kbservice.llm.protocols import Generator
from kbservice.llm.soft_tokens import IMAGE_SLOT
from kbservice.negation import mentions
from kbservice.recommend import differential as differentials
from kbservice.recommend import evidence
from kbservice.recommend.evidence_retrieval import gather, image_summary
from kbservice.recommend.features import Evidence, Features
from kbservice.recommend.fusion import Fusion
from kbservice.recommend.prompts import (
    DIAGNOSIS_ANSWER_PREFIX,
    PROMPT_VERSION,
    SYSTEM,
    PromptSource,
    diagnosis_message,
    render_patient,
    static_head,
)
from kbservice.recommend.request import Mode, RecommendationRequest, clean_request
from kbservice.recommend.sources import (
    RetrievalRecord,
    RetrievedSource,
    image_case_sources,
    number_sources,
    treatment_sources,
)
from kbservice.recommend.treatment import Listener, TreatmentPlanner
from kbservice.retrieve import Retriever
from kbservice.types import DifferentialEntry, Provenance, Recommendation, TreatmentPlan

if TYPE_CHECKING:
    from kbservice.imaging.similarity import ImageSimilarity


class Recommender:
    def __init__(
        self,
        *,
        retriever: Retriever,
        case_store: CaseStore,
        generator: Generator,
        settings: RecommendSettings,
        max_chars: int,
        images: ImageSimilarity | None = None,
        imaging: ImagingSettings | None = None,
    ) -> None:
        self.retriever = retriever
        self.case_store = case_store
        self.images = images
        self.imaging = imaging or ImagingSettings()
        self.generator = generator
        self.settings = settings
        self.max_chars = max_chars
        self.planner = TreatmentPlanner(generator=generator, settings=settings)
        self._static_head = static_head(generator.chat_prompt, SYSTEM)

    # ----- request checks ---------------------------------------------------------------------------

    def clean_request(self, request: RecommendationRequest) -> RecommendationRequest:
        """The request validated and de-identified: identifiers never reach the prompt or the audit."""
        return clean_request(request, max_chars=self.max_chars)

    # ----- features ---------------------------------------------------------------------------------

    def evidence(
        self,
        request: RecommendationRequest,
        *,
        exclude_chunk_ids: Sequence[int] = (),
        recorded: RetrievalRecord | None = None,
        classifier: CaseClassifier | None = None,
    ) -> Evidence:
        """Retrieves at the request's version (or takes the `recorded` retrieval, for replay), computes the
        similar-case evidence, what the text says about each candidate, the case `classifier`'s scores
        (None: no classifier) and the image encoder head's, and renders the diagnosis prompt: everything
        before the model runs."""
        started = time.perf_counter()
        version = self.retriever.resolve_version(request.as_of)
        if version is None:
            raise KBError("the knowledge base is empty; ingest guidelines and cases first")
        candidates = self.case_store.labels(as_of=version)
        if not candidates:
            raise KBError(
                f"knowledge version {version} names no diagnoses: ingest labelled cases, or guidelines "
                "with `conditions:` in their front matter"
            )
        sources: list[RetrievedSource] = []
        case_matrix = np.zeros((len(candidates), len(evidence.EVIDENCE_FEATURES)))
        prompt_sources: list[PromptSource] = []
        text_sources: list[PromptSource] = []  # without the similar-image cases
        retrieval = recorded or RetrievalRecord()
        if request.mode == "rag":
            if recorded is None:
                retrieval = self.retrieve(request, version=version, exclude_chunk_ids=exclude_chunk_ids)
            guideline_hits = self.retriever.store.hits([tuple(row) for row in retrieval.guideline])
            dense = [(int(cid), float(score)) for cid, score in retrieval.dense]
            lexical = [(int(cid), float(score)) for cid, score in retrieval.lexical]
            cases_by_chunk = self.case_store.by_chunk_ids([cid for cid, _ in dense] + [cid for cid, _ in lexical])
            image_cases = self.case_store.by_case_ids([int(row[1]) for row in retrieval.images])
            text = case_text(request)
            said = mentions(text)
            case_matrix = np.hstack(
                [
                    evidence.case_features(
                        candidates, dense=dense, lexical=lexical, cases_by_chunk=cases_by_chunk, query=said
                    ),
                    evidence.image_features(
                        candidates, hits=[(int(r[1]), float(r[2])) for r in retrieval.images], cases=image_cases
                    ),
                    evidence.mention_features(candidates, said),
                    self.classifier_features(candidates, text, classifier),
                    evidence.image_head_features(candidates, retrieval.image_head),
                ]
            )
            sources = number_sources(
                guideline_hits, dense, lexical, cases_by_chunk, rrf_k=self.retriever.settings.rrf_k
            )
            sources += image_case_sources(retrieval.images, image_cases, start=len(sources) + 1)
            prompt_sources = self.prompt_sources(sources, ("case", "image_case"))
            text_sources = self.prompt_sources(sources, ("case",))
        patient = render_patient(request.findings, history=request.history, age=request.age, sex=request.sex)
        text_prompt = None
        if request.images:
            if case_text(request):  # an image-only request has no text to score alone
                text_prompt = self.diagnosis_prompt(patient, text_sources)
            patient = f"Image: {IMAGE_SLOT}\n{patient}"
        return Evidence(
            version=version,
            candidates=candidates,
            case_matrix=case_matrix,
            sources=sources,
            prompt=self.diagnosis_prompt(patient, prompt_sources),
            retrieval=retrieval,
            retrieve_s=time.perf_counter() - started,
            images=tuple(image.pixels for image in request.images),
            text_prompt=text_prompt,
        )

    def prompt_sources(self, sources: Sequence[RetrievedSource], case_kinds: tuple[str, ...]) -> list[PromptSource]:
        """What the diagnosis prompt shows: every guideline passage, then the first `similar_cases` cases of
        the given kinds."""
        guidelines = [s.prompt_view() for s in sources if s.kind == "guideline"]
        return guidelines + [s.prompt_view() for s in sources if s.kind in case_kinds][: self.settings.similar_cases]

    def diagnosis_prompt(self, patient: str, sources: Sequence[PromptSource]) -> str:
        """The chat prompt asking for the diagnosis of `patient` from `sources`, ending where the model
        continues with a diagnosis."""
        message = diagnosis_message(
            patient,
            list(sources),
            guideline_chars=self.settings.prompt_guideline_chars,
            case_chars=self.settings.prompt_case_chars,
        )
        return self.generator.chat_prompt(message, system=SYSTEM) + DIAGNOSIS_ANSWER_PREFIX

    def classifier_features(
        self, candidates: Sequence[str], text: str, classifier: CaseClassifier | None
    ) -> np.ndarray:
        """The classifier's columns for `text` (zeros without a classifier or text). The text's embedding is
        the one case retrieval just computed for the same text (the retriever keeps the last query's)."""
        if classifier is None or not text:
            return np.zeros((len(candidates), len(evidence.CLASSIFIER_FEATURES)))
        vector = self.retriever.query_vector(text)[None, :]
        log_probabilities = classifier.log_probabilities([text], vector)[0]
        return evidence.classifier_features(candidates, classifier.labels, log_probabilities)

    def features(
        self,
        request: RecommendationRequest,
        *,
        exclude_chunk_ids: Sequence[int] = (),
        recorded: RetrievalRecord | None = None,
        adapter: str | None = None,
        classifier: CaseClassifier | None = None,
        fusion: Fusion | None = None,
    ) -> Features:
        """Every candidate's evidence and model scores (with `adapter`; None: the base model). With `fusion`,
        only the model passes it weighs are run (see `score`)."""
        found = self.evidence(request, exclude_chunk_ids=exclude_chunk_ids, recorded=recorded, classifier=classifier)
        return self.score(found, adapter, fusion=fusion)

    def score(self, found: Evidence, adapter: str | None, *, fusion: Fusion | None = None) -> Features:
        """Adds the model's scores of every candidate (with `adapter`) to the evidence: from the whole prompt,
        and for a request with images and text also from its text alone (a second pass; its columns are 0 for
        a request with images only, and when `fusion` gives them no weight the pass is skipped and they are 0
        too)."""
        started = time.perf_counter()
        llm_matrix = self.model_scores(found.prompt, found.candidates, adapter, images=found.images)
        unweighted = fusion is not None and not any(fusion.weights.get(n, 0.0) for n in evidence.LLM_TEXT_FEATURES)
        if not found.images:
            text_matrix = llm_matrix  # no image: the whole prompt is the text alone
        elif found.text_prompt is None or unweighted:
            text_matrix = np.zeros_like(llm_matrix)
        else:
            text_matrix = self.model_scores(found.text_prompt, found.candidates, adapter, images=())
        return Features(
            version=found.version,
            candidates=found.candidates,
            names=[*evidence.EVIDENCE_FEATURES, *evidence.LLM_FEATURES, *evidence.LLM_TEXT_FEATURES],
            matrix=np.hstack([found.case_matrix, llm_matrix, text_matrix]),
            sources=found.sources,
            prompt=found.prompt,
            timings={"retrieve_s": found.retrieve_s, "score_s": time.perf_counter() - started},
            retrieval=found.retrieval,
        )

    def model_scores(
        self, prompt: str, candidates: list[str], adapter: str | None, *, images: Sequence[np.ndarray]
    ) -> np.ndarray:
        """A (candidates x LLM_FEATURES) matrix: the model's scores of each candidate after `prompt`."""
        scores = self.generator.score_candidates(
            prompt,
            candidates,
            static_head=self._static_head,
            adapter=adapter,
            image_vectors=self.image_vectors(images, adapter),
        )
        return evidence.llm_features([s.mean_logprob for s in scores], [s.total_logprob for s in scores])

    def image_vectors(self, images: Sequence[np.ndarray], adapter: str | None) -> np.ndarray | None:
        """The images embedded by the encoder version `adapter`'s projector was trained on (None: the adapter
        has no projector, or there are no images)."""
        encoder_version = self.generator.projector_encoder(adapter)
        if not images or encoder_version is None or self.images is None:
            return None
        return self.images.registry.load(encoder_version).encode(list(images))

    def retrieve(
        self, request: RecommendationRequest, *, version: int, exclude_chunk_ids: Sequence[int]
    ) -> RetrievalRecord:
        """Guideline passages (hybrid), similar cases (each ranker unfused) and, for a request with images,
        similar cases by image, for a cleaned request."""
        return gather(
            request,
            version=version,
            exclude_chunk_ids=exclude_chunk_ids,
            retriever=self.retriever,
            case_store=self.case_store,
            images=self.images,
            settings=self.settings,
            imaging=self.imaging,
        )

    # ----- the whole answer -------------------------------------------------------------------------

    def answer(
        self,
        request: RecommendationRequest,
        *,
        fusion: Fusion,
        calibration_id: int | None,
        index_build: str,
        fusion_selection: dict[str, Any] | None = None,
        with_treatment: bool = True,
        created_at: str | None = None,
        recommendation_id: str | None = None,
        recorded: RetrievalRecord | None = None,
        adapter: str | None = None,
        classifier: ServingClassifier | None = None,
        listener: Listener | None = None,
    ) -> tuple[Recommendation, RetrievalRecord]:
        """The answer to an already cleaned request (see `clean_request`), not yet stored, and the retrieval
        it came from (`recorded`: recompute from that retrieval instead of searching). Every model call uses
        `adapter` (None: the base model), fixed for the whole request, and the case `classifier` the fusion
        was calibrated with; `fusion_selection` (the calibration's group-selection record) is named in the
        provenance. `listener` hears the differential as soon as it is decided, then the treatment
        plan as it is generated."""
        started = time.perf_counter()
        feats = self.features(
            request,
            recorded=recorded,
            adapter=adapter,
            classifier=classifier.model if classifier else None,
            fusion=fusion,
        )
        differential, reason = self.decide(feats, fusion, mode=request.mode)
        if listener is not None:
            listener(
                "differential",
                {"differential": [asdict(e) for e in differential], "abstained": reason is not None, "reason": reason},
            )
        timings = dict(feats.timings)
        sources, retrieval = feats.sources, feats.retrieval
        if with_treatment and reason is None and request.mode == "rag":
            stage = time.perf_counter()
            planned = self.plan_treatment(
                differential[0].diagnosis,
                version=feats.version,
                sources=sources,
                recorded_rows=retrieval.treatment,
                adapter=adapter,
                listener=listener,
            )
            treatment, sources = planned.plan, planned.sources
            retrieval = replace(retrieval, treatment=planned.rows)
            timings["treatment_s"] = time.perf_counter() - stage
        elif reason is not None:
            treatment = TreatmentPlan.none("no treatment plan: the recommendation abstained")
        elif request.mode == "no-rag":
            treatment = TreatmentPlan.none("no treatment plan without retrieval (no-rag mode)")
        else:
            treatment = TreatmentPlan.none(None)
        timings["total_s"] = time.perf_counter() - started
        provenance = Provenance(
            knowledge_version=feats.version,
            index_build=index_build,
            base_model=self.generator.model_name,
            base_model_sha256=self.generator.model_sha256,
            adapter_version=adapter,
            classifier_version=classifier.version if classifier else None,
            encoder_version=retrieval.encoder_version,
            prompt_version=PROMPT_VERSION,
            calibration_id=calibration_id,
            mode=request.mode,
            candidates=len(feats.candidates),
            created_at=created_at or datetime.now(UTC).isoformat(),
            fusion_groups=list(fusion_selection["groups"]) if fusion_selection else None,
            fusion_out_of_fold_nll=fusion_selection.get("out_of_fold_nll") if fusion_selection else None,
        )
        recommendation = Recommendation(
            id=recommendation_id or f"rec-{uuid.uuid4().hex[:16]}",
            differential=differential,
            abstained=reason is not None,
            reason=reason,
            treatment=treatment,
            sources=[s.cited() for s in sources],
            images=image_summary(request, retrieval),
            provenance=provenance,
            timings={k: round(v, 4) for k, v in timings.items()},
        )
        return recommendation, retrieval

    def decide(self, feats: Features, fusion: Fusion, *, mode: Mode) -> tuple[list[DifferentialEntry], str | None]:
        """The differential (top candidates by fused probability, each with the sources supporting it) and
        the reason to abstain, or None."""
        return differentials.decide(feats, fusion, mode=mode, abstain_below=self.settings.abstain_below)

    def plan_treatment(
        self,
        diagnosis: str,
        *,
        version: int,
        sources: list[RetrievedSource],
        recorded_rows: list[list] | None = None,
        adapter: str | None = None,
        listener: Listener | None = None,
    ) -> PlannedTreatment:
        """A cited plan for `diagnosis` from guideline passages about treating it (retrieved at `version`, or
        the `recorded_rows` of an earlier answer, for replay) and the treatments recorded on similar cases in
        `sources`. The passages it cites that are not among `sources` are numbered on after them."""
        if recorded_rows is None:
            query = f"treatment and management of {diagnosis}"
            hits = self.retriever.search(query, k=8, as_of=version, kind="guideline").hits
            recorded_rows = [[h.chunk_id, h.score, h.dense_rank, h.lexical_rank] for h in hits]
        hits = self.retriever.store.hits([tuple(row) for row in recorded_rows])
        chosen, all_sources = treatment_sources(diagnosis, hits, sources)
        plan = self.planner.plan(
            diagnosis,
            [s.treatment_view() for s in chosen],
            allowed_ids={s.id for s in all_sources},
            adapter=adapter,
            listener=listener,
        )
        return PlannedTreatment(plan=plan, sources=all_sources, rows=recorded_rows)


@dataclass(frozen=True)
class ServingClassifier:
    """The case classifier a request is answered with, and its stored version (for provenance)."""

    version: str
    model: CaseClassifier


@dataclass(frozen=True)
class PlannedTreatment:
    plan: TreatmentPlan
    sources: list[RetrievedSource]  # the request's sources, then the guideline passages the plan added
    rows: list[list]  # the treatment query's hits [chunk_id, score, dense_rank, lexical_rank], for replay
