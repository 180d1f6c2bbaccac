"""Recommend, show and replay: the entry points the CLI (and later the API) call.

A recommendation is stored with its de-identified request, its response and an audit row whose payload
holds the response's hash, so a stored answer cannot be edited without `audit verify` noticing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from kbservice.errors import KBError
from kbservice.recommend import evidence
from kbservice.recommend.fusion import Fusion
from kbservice.recommend.pipeline import ServingClassifier
from kbservice.recommend.prompts import PROMPT_VERSION
from kbservice.recommend.request import RecommendationRequest
from kbservice.recommend.sources import RetrievalRecord
from kbservice.recommend.treatment import Listener
from kbservice.types import Recommendation, ReplayResult, StoredRecommendation

if TYPE_CHECKING:
    from kbservice.services import Services

# Fields that legitimately differ between an answer and its replay.
_VOLATILE = ("id", "timings")


def response_hash(response: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(response, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Calibration:
    """The fusion a request is answered with: the weights, the stored calibration they come from (None: the
    uncalibrated defaults) and the case classifier they were fitted with (None: none)."""

    fusion: Fusion
    calibration_id: int | None
    classifier: ServingClassifier | None
    selection: dict[str, Any] | None = None  # the calibration's record of its evidence groups (group_selection)


def calibration_for(
    services: Services, *, mode: str, calibration_id: int | None = None, adapter_version: str | None = None
) -> Calibration:
    """The fitted calibration for this model, adapter and prompt (a given one for replay), else defaults,
    with the classifier it was fitted with, loaded."""
    store = services.recommendations
    if calibration_id is not None:
        row = store.calibration(calibration_id)
    else:
        row = store.latest_calibration(
            base_model_sha256=services.generator.model_sha256,
            adapter_version=adapter_version,
            prompt_version=PROMPT_VERSION,
            mode=mode,
        )
    if row is None:
        return Calibration(Fusion(weights=dict(evidence.DEFAULT_WEIGHTS)), None, None)
    classifier = services.serving_classifier(row.get("classifier_version"))
    return Calibration(Fusion(weights=row["weights"]), row["id"], classifier, (row["metrics"] or {}).get("selection"))


def recommend(
    services: Services,
    request: RecommendationRequest,
    *,
    actor: str,
    with_treatment: bool = True,
    listener: Listener | None = None,
) -> Recommendation:
    """Answers `request`, stores it with an audit row, and returns the answer. The adapter (the champion
    unless the request names one) is fixed when the request starts and used for all of it. `listener` hears
    the answer as it forms (for streaming); the stored answer is the same either way."""
    recommender = services.recommender
    clean = recommender.clean_request(request)
    adapter = services.serving_adapter(clean.adapter)
    calibration = calibration_for(services, mode=clean.mode, adapter_version=adapter)
    answer, retrieval = recommender.answer(
        clean,
        fusion=calibration.fusion,
        calibration_id=calibration.calibration_id,
        fusion_selection=calibration.selection,
        index_build=services.index_build(),
        with_treatment=with_treatment,
        adapter=adapter,
        classifier=calibration.classifier,
        listener=listener,
    )
    stored_request = clean.to_json() | {"with_treatment": with_treatment, "retrieval": retrieval.to_json()}
    response = answer.to_json()
    digest = response_hash(response)
    services.recommendations.save(
        recommendation_id=response["id"],
        created_at=response["provenance"]["created_at"],
        request=stored_request,
        response=response,
        response_hash=digest,
        audit=services.audit,
        actor=actor,
        audit_payload={
            "recommendation_id": response["id"],
            "response_sha256": digest,
            "provenance": response["provenance"],
            "sources": [
                {"id": s["id"], "chunk_id": s["chunk_id"], "content_hash": s["content_hash"]}
                for s in response["sources"]
            ],
            "abstained": response["abstained"],
        },
    )
    return answer


def show(services: Services, recommendation_id: str) -> StoredRecommendation:
    """The stored recommendation with its request, and whether it still matches its audited hash."""
    row = services.recommendations.get(recommendation_id)
    entry = services.audit.store.entry(row["audit_seq"])
    audited_hash = json.loads(entry.payload).get("response_sha256") if entry else None
    return StoredRecommendation(
        id=row["id"],
        created_at=row["created_at"],
        request=row["request"],
        response=row["response"],
        audit_seq=row["audit_seq"],
        intact=audited_hash == response_hash(row["response"]) == row["response_hash"],
    )


def replay(services: Services, recommendation_id: str, *, actor: str) -> ReplayResult:
    """Re-runs a stored recommendation from its provenance (its knowledge version, adapter, calibration and
    prompt version) and compares the output. Audits the outcome."""
    stored = services.recommendations.get(recommendation_id)
    original = stored["response"]
    provenance = original["provenance"]
    if provenance["prompt_version"] != PROMPT_VERSION:
        raise KBError(
            f"recommendation {recommendation_id} used prompt {provenance['prompt_version']}; this "
            f"kbservice has {PROMPT_VERSION}, so it cannot reproduce it"
        )
    if provenance["base_model_sha256"] != services.generator.model_sha256:
        raise KBError(
            f"recommendation {recommendation_id} used base model {provenance['base_model_sha256'][:12]}; "
            f"the configured one is {services.generator.model_sha256[:12]}"
        )
    fields = {k: v for k, v in stored["request"].items() if k not in ("with_treatment", "retrieval")}
    request = replace(RecommendationRequest.from_json(fields), as_of=provenance["knowledge_version"])
    adapter = provenance["adapter_version"]
    if adapter is not None:  # the adapter it ran on, whatever the champion is now (rows are immutable)
        services.load_adapter(adapter)
    recorded = RetrievalRecord.from_json(stored["request"]["retrieval"])
    # The calibration names the classifier its weights were fitted with (rows are immutable, so it is the
    # one the answer used).
    calibration = calibration_for(services, mode=request.mode, calibration_id=provenance["calibration_id"])
    replayed, _ = services.recommender.answer(
        request,
        fusion=calibration.fusion,
        calibration_id=calibration.calibration_id,
        # An answer stored before provenance named the fusion's groups replays without them (it lacks the key).
        fusion_selection=calibration.selection if "fusion_groups" in provenance else None,
        classifier=calibration.classifier,
        index_build=provenance["index_build"],
        with_treatment=stored["request"].get("with_treatment", True),
        created_at=provenance["created_at"],
        recommendation_id=recommendation_id,
        recorded=recorded,
        adapter=adapter,
    )
    differences = _differences(original, replayed.to_json())
    drift = _retrieval_drift(services, request, recorded)
    services.audit.record(
        "recommendation.replay",
        actor=actor,
        payload={
            "recommendation_id": recommendation_id,
            "identical": not differences,
            "differences": differences,
            "retrieval_now_differs": drift,
        },
    )
    return ReplayResult(
        recommendation_id=recommendation_id,
        identical=not differences,
        differences=differences,
        retrieval_now_differs=drift,
        replayed=replayed,
    )


def _retrieval_drift(services: Services, request: RecommendationRequest, recorded: RetrievalRecord) -> bool:
    """Whether a fresh search as of the same version returns other rows than the recorded ones (possible
    with an approximate index or SQLite bm25 statistics that grew with later versions; informational)."""
    if request.mode != "rag":
        return False
    version = services.retriever.resolve_version(request.as_of)
    fresh = services.recommender.retrieve(request, version=version, exclude_chunk_ids=())

    def ids(rows: list[list]) -> list[int]:
        return [int(row[0]) for row in rows]

    return any(ids(getattr(fresh, k)) != ids(getattr(recorded, k)) for k in ("guideline", "dense", "lexical"))


def _differences(original: dict[str, Any], replayed: dict[str, Any], path: str = "") -> list[str]:
    if isinstance(original, dict) and isinstance(replayed, dict):
        found = []
        for key in sorted(set(original) | set(replayed)):
            if not path and key in _VOLATILE:
                continue
            found += _differences(original.get(key), replayed.get(key), f"{path}.{key}" if path else key)
        return found
    if isinstance(original, list) and isinstance(replayed, list) and len(original) == len(replayed):
        return [
            d
            for i, (a, b) in enumerate(zip(original, replayed, strict=True))
            for d in _differences(a, b, f"{path}[{i}]")
        ]
    return [] if original == replayed else [f"{path}: {original!r} -> {replayed!r}"]
