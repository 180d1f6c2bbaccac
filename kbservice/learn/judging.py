"""Judging a trained candidate: it and the champion score the same held-out and frozen cases, the gate
compares them, and the poisoning guard's findings are added to its reasons."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kbservice.learn.gate import Judged, compare, cross_fitted, examples_for
from kbservice.progress import Progress
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
    candidate_fusion, candidate_metrics = cross_fitted(candidate_examples)
    _, champion_metrics = cross_fitted(champion_examples)
    evaluate_s = time.perf_counter() - started
    _, reasons, checks = compare(candidate_metrics, champion_metrics, services.settings.learn)
    reasons += list(label_reasons)
    return Verdict(
        candidate_fusion=candidate_fusion,
        candidate_metrics=candidate_metrics,
        champion_metrics=champion_metrics,
        gate=GateResult(passed=not reasons, reasons=reasons, checks=checks),
        evaluate_s=evaluate_s,
    )
