"""Judging a trained candidate: it and the champion score the same held-out and frozen cases, the gate
compares them, and the poisoning guard's findings are added to its reasons."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kbservice.learn.gate import Judged, compare, cross_fitted, examples_for
from kbservice.progress import Progress
from kbservice.recommend import evidence
from kbservice.recommend.calibrate import Example, selection_settings
from kbservice.recommend.fusion import Fusion
from kbservice.types import AdapterDecision, GateResult

if TYPE_CHECKING:
    from kbservice.services import Services


@dataclass(frozen=True)
class Verdict:
    """The gate's outcome for one candidate, with the metrics it rests on."""

    candidate_fusion: Fusion  # fitted on every gate case: the calibration stored with the candidate
    candidate_metrics: dict[str, Any]
    champion_metrics: dict[str, Any]
    gate: GateResult
    evaluate_s: float
    language_model: dict[str, Any] | None = None  # what the adapter's scores contribute (see model_share)

    @property
    def decision(self) -> AdapterDecision:
        if not self.gate.passed:
            return AdapterDecision(status="rejected", reason="; ".join(self.gate.reasons))
        candidate, champion = self.candidate_metrics, self.champion_metrics
        return AdapterDecision(
            status="promoted",
            reason=f"passed the gate: macro-F1 {candidate['macro_f1']:.4f} vs champion "
            f"{champion['macro_f1']:.4f} on {candidate['cases']} cases",
        )


def judge_candidate(
    services: Services,
    *,
    candidate: str,
    champion: str | None,
    gate_cases: Sequence[Judged],
    label_reasons: Sequence[str],
    progress: Progress,
) -> Verdict:
    """Scores `gate_cases` with the candidate and with the champion (None: the base model), each with its
    own cross-fitted fusion, and applies the gate; `label_reasons` (the poisoning guard's) also block."""
    started = time.perf_counter()
    recommender = services.recommender
    with progress.task("Scoring held-out and frozen cases (candidate, champion)", total=2 * len(gate_cases)) as advance:
        candidate_examples = examples_for(recommender, gate_cases, adapter=candidate, advance=advance)
        champion_examples = examples_for(recommender, gate_cases, adapter=champion, advance=advance)
    selection = selection_settings(services.settings.recommend)
    candidate_fusion, candidate_metrics = cross_fitted(candidate_examples, **selection)
    _, champion_metrics = cross_fitted(champion_examples, **selection)
    evaluate_s = time.perf_counter() - started
    language_model = language_model_report(candidate_fusion, candidate_examples, candidate_metrics, champion_metrics)
    _, reasons, checks = compare(candidate_metrics, champion_metrics, services.settings.learn)
    reasons += list(label_reasons)
    return Verdict(
        candidate_fusion=candidate_fusion,
        candidate_metrics=candidate_metrics,
        champion_metrics=champion_metrics,
        gate=GateResult(passed=not reasons, reasons=reasons, checks=checks),
        evaluate_s=evaluate_s,
        language_model=language_model,
    )


NEGLIGIBLE_SHARE = 0.05


def model_share(fusion: Fusion, examples: Sequence[Example]) -> float:
    """How much of the fused score's spread across candidates comes from the language model's features:
    the mean over cases of std(model part) / (std(model part) + std(rest)). 0: the model changes nothing."""
    shares = []
    for example in examples:
        names, matrix = example.features.names, example.features.matrix
        w = np.array([fusion.weights.get(n, 0.0) for n in names])
        is_model = np.array([n in evidence.MODEL_FEATURES for n in names])
        model_part, rest = matrix[:, is_model] @ w[is_model], matrix[:, ~is_model] @ w[~is_model]
        total = float(np.std(model_part) + np.std(rest))
        if total > 0:
            shares.append(float(np.std(model_part)) / total)
    return round(float(np.mean(shares)), 4) if shares else 0.0


def language_model_report(
    fusion: Fusion, examples: Sequence[Example], candidate: dict[str, Any], champion: dict[str, Any]
) -> dict[str, Any]:
    """The adapter's own accuracy beside the fused one, its fitted weights and share, and a plain note when
    the fusion gives it next to no weight (then training the adapter cannot change the answers)."""
    share = model_share(fusion, examples)
    report = {
        "model_only_accuracy": {
            "candidate": candidate.get("model_only_accuracy"),
            "champion": champion.get("model_only_accuracy"),
        },
        "fused_accuracy": candidate.get("accuracy"),
        "weights": {name: round(fusion.weights.get(name, 0.0), 4) for name in evidence.MODEL_FEATURES},
        "share_of_fused_score": share,
    }
    if share < NEGLIGIBLE_SHARE:
        report["note"] = (
            f"the fitted fusion gives the language model almost no weight ({share:.1%} of the fused score's "
            "spread): its answers barely move the differential, so this adapter's training cannot help much"
        )
    return report
