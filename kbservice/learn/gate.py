"""The promotion gate: candidate and champion judged on the same cases, plus the poisoning guard.

Both adapters score the same held-out and frozen cases (retrieval is done once, leave-one-out, and shared).
Each adapter's fusion weights (its temperature, generalised) are cross-fitted: fitted on one half of the
cases and measured on the other, both ways, so neither is judged on the cases it was calibrated on. The
weights stored for a promoted candidate are then fitted on all of them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kbservice.classification import Decision, classification_metrics
from kbservice.config import LearnSettings
from kbservice.recommend import evidence
from kbservice.recommend.calibrate import Example, fit, fit_selected, truth_indices
from kbservice.recommend.features import Evidence
from kbservice.recommend.fusion import Fusion
from kbservice.recommend.group_selection import LOWER
from kbservice.recommend.pipeline import Recommender
from kbservice.types import CaseRecord


@dataclass(frozen=True)
class Judged:
    """A labelled case with its (leave-one-out) evidence, computed once per cycle."""

    case: CaseRecord
    evidence: Evidence


def examples_for(
    recommender: Recommender, judged: Sequence[Judged], *, adapter: str | None, advance=None
) -> list[Example]:  # type: ignore[no-untyped-def]
    out = []
    for item in judged:
        features = recommender.score(item.evidence, adapter)
        out.append(
            Example(case=item.case, features=features, truth=truth_indices(features.candidates, item.case.diagnosis))
        )
        if advance:
            advance(1)
    return out


def cross_fitted(
    examples: Sequence[Example],
    *,
    margin: float | None,
    modality_margin: float | None = 0.0,
    modality_holder: str = LOWER,
) -> tuple[Fusion, dict[str, Any]]:
    """The fusion fitted on all `examples` (its modality and evidence groups selected with `modality_margin`,
    `modality_holder` and `margin`, see `recommend.group_selection`), and metrics of out-of-fold predictions
    (2-fold cross-fitting, the selection redone inside each fold; in-sample when there are too few cases to
    split)."""
    usable = [e for e in examples if e.truth]
    split = min(len(usable[0::2]), len(usable[1::2])) >= 5
    decisions: list[Decision] = []
    nll = []
    rule = {"margin": margin, "modality_margin": modality_margin, "modality_holder": modality_holder}
    for example, p in _predictions(usable, split=split, rule=rule):
        top = int(np.argmax(p))
        assert example.case is not None
        decisions.append(
            Decision(labels=example.case.diagnosis, top=example.features.candidates[top], probability=float(p[top]))
        )
        nll.append(-float(np.log(max(p[example.truth].sum(), 1e-12))))
    metrics = classification_metrics(decisions) | {"nll": round(float(np.mean(nll)), 4), "cases": len(decisions)}
    metrics["fitting"] = "2-fold cross-fitted" if split else "in-sample (fewer than 10 cases)"
    # What the model contributes on its own (its scores with the retrieved context, fitted the same way):
    # the similar-case evidence is shared by both adapters, so this is where an adapter's teaching shows.
    model_only = [
        int(np.argmax(p)) in e.truth
        for e, p in _predictions(usable, split=split, rule=rule, names=evidence.LLM_FEATURES)
    ]
    metrics["model_only_accuracy"] = round(float(np.mean(model_only)), 4)
    fusion, selection = fit_selected(usable, **rule)
    metrics["selection"] = selection.as_dict()
    return fusion, metrics


def _predictions(
    usable: Sequence[Example],
    *,
    split: bool,
    rule: dict[str, Any],
    names: Sequence[str] | None = None,
) -> list[tuple[Example, np.ndarray]]:
    """Each example with its probabilities from a fusion fitted on the other half of the examples
    (alternate ones), or on all of them when not `split`: of the named features, else of the groups
    selected on that half (by `rule`, the `fit_selected` keywords)."""
    halves = [list(usable[0::2]), list(usable[1::2])]
    pairs = [(halves[0], halves[1]), (halves[1], halves[0])] if split else [(list(usable), list(usable))]
    out = []
    for fit_on, judge in pairs:
        fusion = fit(fit_on, names=names) if names else fit_selected(fit_on, **rule)[0]
        out += [(e, fusion.probabilities(e.features.matrix, e.features.names)) for e in judge]
    return out


def compare(
    candidate: dict[str, Any], champion: dict[str, Any], settings: LearnSettings
) -> tuple[bool, list[str], dict]:
    """Whether the candidate may replace the champion, the reasons it may not, and every check."""
    reasons = []
    checks: dict[str, Any] = {}
    drop = champion["macro_f1"] - candidate["macro_f1"]
    checks["macro_f1"] = {
        "candidate": candidate["macro_f1"],
        "champion": champion["macro_f1"],
        "margin": settings.f1_margin,
    }
    if drop > settings.f1_margin:
        reasons.append(
            f"macro-F1 fell from {champion['macro_f1']:.4f} to {candidate['macro_f1']:.4f} "
            f"(more than the {settings.f1_margin} margin)"
        )
    class_drops = {}
    for label, recall in champion["per_class_recall"].items():
        support = champion["per_class_support"][label]
        if recall <= 0 or support < settings.class_min_support:
            continue
        fell = recall - candidate["per_class_recall"].get(label, 0.0)
        # A class regresses when its recall falls by more than the margin AND by more than one case: on a
        # handful of evaluation cases a single case is already 20-30 points of recall.
        if fell > settings.class_margin and round(fell * support) >= settings.class_min_cases_lost:
            class_drops[label] = {"champion": recall, "candidate": candidate["per_class_recall"].get(label, 0.0)}
    checks["class_recall"] = {
        "regressions": class_drops,
        "margin": settings.class_margin,
        "min_support": settings.class_min_support,
        "min_cases_lost": settings.class_min_cases_lost,
    }
    if class_drops:
        worst = max(class_drops, key=lambda k: class_drops[k]["champion"] - class_drops[k]["candidate"])
        reasons.append(
            f"recall of {len(class_drops)} class(es) fell by more than {settings.class_margin}, worst {worst!r} "
            f"{class_drops[worst]['champion']:.2f} -> {class_drops[worst]['candidate']:.2f}"
        )
    checks["ece"] = {"candidate": candidate["ece"], "champion": champion["ece"], "margin": settings.ece_margin}
    if candidate["ece"] - champion["ece"] > settings.ece_margin:
        reasons.append(
            f"calibration degraded: ECE {champion['ece']:.4f} -> {candidate['ece']:.4f} "
            f"(more than the {settings.ece_margin} margin)"
        )
    return not reasons, reasons, checks


def label_agreement(
    new: Sequence[Judged], trusted: Sequence[Judged], settings: LearnSettings
) -> tuple[list[str], dict[str, Any]]:
    """The poisoning guard. Every new label is compared with what the similar-case evidence alone predicts
    for that case left out (weights fitted on trusted cases: the frozen set and older ones). A labeller
    whose labels agree markedly less often than trusted labels do is named, and blocks the candidate."""
    if not trusted or not new:
        return [], {"checked": False, "why": "no trusted cases to compare with" if new else "no new cases"}
    trusted_examples = [_case_example(j) for j in trusted]
    fusion = fit([e for e in trusted_examples if e.truth], names=evidence.SIMILAR_CASE_FEATURES)
    baseline = float(np.mean([_agrees(fusion, e) for e in trusted_examples]))
    by_labeller: dict[str, list[bool]] = defaultdict(list)
    disagreeing: dict[str, list[int]] = defaultdict(list)
    for item in new:
        example = _case_example(item)
        ok = _agrees(fusion, example)
        who = item.case.labeled_by or "unknown"
        by_labeller[who].append(ok)
        if not ok:
            disagreeing[who].append(item.case.case_id)
    # Disagreement with the evidence is expected at the trusted rate; a labeller is flagged when theirs is
    # both larger by the margin and improbable at that rate (one-sided binomial tail below alpha).
    expected = min(max(1.0 - baseline, 0.01), 0.99)
    labellers = {}
    for who, oks in sorted(by_labeller.items()):
        misses = len(oks) - sum(oks)
        labellers[who] = {
            "cases": len(oks),
            "agreement": round(float(np.mean(oks)), 4),
            "shortfall": round(baseline - float(np.mean(oks)), 4),
            "p_value": float(f"{binomial_tail(misses, len(oks), expected):.3g}"),
            "disagreeing_case_ids": disagreeing[who][:50],
        }
    reasons = [
        f"labels by {who!r} agree with the similar-case evidence on {info['agreement']:.0%} of {info['cases']} "
        f"cases, against {baseline:.0%} for trusted labels (p = {info['p_value']:.2g}): possible mislabelling "
        "or poisoning"
        for who, info in labellers.items()
        if info["cases"] >= settings.label_agreement_min_cases
        and info["shortfall"] > settings.label_agreement_margin
        and info["p_value"] < settings.label_agreement_alpha
    ]
    worst = max(labellers, key=lambda w: (labellers[w]["shortfall"], labellers[w]["cases"]))
    return reasons, {
        "checked": True,
        "trusted_agreement": round(baseline, 4),
        "trusted_cases": len(trusted_examples),
        "labellers": labellers,
        "most_harmful_labeller": worst if labellers[worst]["shortfall"] > 0 else None,
    }


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return float(sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def _case_example(item: Judged) -> Example:
    ev = item.evidence
    truth = truth_indices(ev.candidates, item.case.diagnosis)
    features = _CaseOnly(ev.case_matrix, list(evidence.EVIDENCE_FEATURES), ev.candidates)
    return Example(case=item.case, features=features, truth=truth)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _CaseOnly:
    """The slice of Features that fitting and scoring need, for the similar-case columns alone."""

    matrix: np.ndarray
    names: list[str]
    candidates: list[str]


def _agrees(fusion: Fusion, example: Example) -> bool:
    return int(np.argmax(fusion.probabilities(example.features.matrix, example.features.names))) in example.truth
