"""`eval diagnosis`: accuracy, macro-F1, per-class recall, calibration, abstention and latency on test cases.

With training cases the evaluation builds a fresh knowledge base from them in a temporary data directory,
fits the calibration there on held-out (leave-one-out) training cases, then answers every test case.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbservice.classification import Decision, classification_metrics
from kbservice.ingest.case_files import CaseDraft, parse_case_file
from kbservice.ingest.cases import deidentify
from kbservice.progress import NoProgress, Progress
from kbservice.recommend import evidence
from kbservice.recommend.answer import fusion_for
from kbservice.recommend.calibrate import Example, calibrate_examples, fit, score, truth_indices
from kbservice.recommend.fusion import Fusion
from kbservice.recommend.request import Mode, request_for_case
from kbservice.types import DifferentialEntry

if TYPE_CHECKING:
    from kbservice.services import Services


def evaluate_diagnosis(
    services: Services,
    test_file: Path,
    *,
    mode: Mode,
    calibrate_first: bool,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Answers every case in `test_file` (de-identified like any request) and scores the top diagnosis."""
    progress = progress or NoProgress()
    drafts = parse_case_file(test_file, labeled_by=None, max_chars=services.settings.ingest.max_case_field_chars)
    recommender = services.recommender
    ablations: dict[str, Fusion] = {}
    if calibrate_first:
        report, held_out = calibrate_examples(services, mode=mode, progress=progress)
        fusion, calibration_id = Fusion(weights=report["weights"]), report["calibration_id"]
        if mode == "rag":
            ablations = {
                "similar_cases_only": fit(held_out, names=evidence.EVIDENCE_FEATURES),
                "model_only_with_retrieved_context": fit(held_out, names=evidence.LLM_FEATURES),
            }
    else:
        fusion, calibration_id = fusion_for(services, mode=mode)
    with progress.task("De-identifying test cases", total=len(drafts)) as advance:
        clean = []
        for draft in drafts:
            clean.append(deidentify(draft))
            advance(1)
    recommender.features(request_for_case(clean[0], mode=mode))  # warm-up: first-call costs are not latency
    examples: list[Example] = []
    latencies, decisions = [], []
    with progress.task(f"Diagnosing test cases ({mode})", total=len(clean)) as advance:
        for draft in clean:
            started = time.perf_counter()
            feats = recommender.features(request_for_case(draft, mode=mode))
            differential, reason = recommender.decide(feats, fusion, mode=mode)
            latencies.append(time.perf_counter() - started)
            examples.append(Example(case=None, features=feats, truth=truth_indices(feats.candidates, draft.diagnosis)))
            decisions.append((draft, differential, reason))
            advance(1)
    result = {
        "mode": mode,
        "cases": len(clean),
        "calibration_id": calibration_id,
        "weights": fusion.weights,
        **_classification_metrics(decisions),
        "latency_s": _latency(latencies),
        "candidates": len(examples[0].features.candidates),
    }
    if ablations:
        # Accuracy, NLL and ECE of each evidence source alone and fused, on the same test answers.
        result["ablation"] = {name: _scores(f, examples) for name, f in ablations.items()} | {
            "fused": _scores(fusion, examples)
        }
    return result


def _classification_metrics(
    decisions: Sequence[tuple[CaseDraft, list[DifferentialEntry], str | None]],
) -> dict[str, Any]:
    return classification_metrics(
        [
            Decision(labels=draft.diagnosis, top=d[0].diagnosis, probability=d[0].probability, abstained=r is not None)
            for draft, d, r in decisions
        ]
    )


def _scores(fusion: Fusion, examples: Sequence[Example]) -> dict[str, float]:
    return {name: round(value, 4) for name, value in score(fusion, examples).items()}


def _latency(latencies: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "mean": round(statistics.fmean(ordered), 4),
        "p50": round(ordered[len(ordered) // 2], 4),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 4),
    }
