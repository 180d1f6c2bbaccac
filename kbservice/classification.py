"""Classification metrics shared by the promotion gates and the evaluations: one definition of each figure.

A prediction is a `Decision` (the true labels, the top answer and its probability); everything else,
including image-case metrics from a probability matrix, is turned into decisions first, so accuracy,
macro-F1 and recall mean the same thing in `eval diagnosis`, the adapter gate and the encoder gate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Decision:
    labels: list[str]  # the true labels, the first one the primary
    top: str  # the top diagnosis
    probability: float
    abstained: bool = False


def classification_metrics(decisions: Sequence[Decision]) -> dict[str, Any]:
    """Accuracy, macro-F1 over the primary labels, ECE, abstention and per-class recall and support.

    A decision is right when its top answer is any of its true labels (matched case-insensitively);
    macro-F1 averages over the primary labels that occur, each class's precision counting the decisions
    that answered it."""
    correct, confidences, abstained = [], [], []
    per_class: dict[str, list[bool]] = defaultdict(list)
    predicted_counts: dict[str, int] = defaultdict(int)
    true_positive: dict[str, int] = defaultdict(int)
    for decision in decisions:
        truths = {label.casefold() for label in decision.labels}
        hit = decision.top.casefold() in truths
        correct.append(hit)
        confidences.append(decision.probability)
        abstained.append(decision.abstained)
        gold = decision.labels[0]
        per_class[gold].append(hit)
        predicted = gold if hit else decision.top
        predicted_counts[predicted.casefold()] += 1
        if hit:
            true_positive[gold.casefold()] += 1
    f1s = []
    for label, hits in per_class.items():
        tp = true_positive[label.casefold()]
        precision = tp / predicted_counts[label.casefold()] if predicted_counts[label.casefold()] else 0.0
        recall = tp / len(hits)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    answered = [c for c, a in zip(correct, abstained, strict=True) if not a]
    return {
        "accuracy": round(float(np.mean(correct)), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
        "ece": round(expected_calibration_error(confidences, correct), 4),
        "abstention_rate": round(float(np.mean(abstained)), 4),
        "accuracy_when_answered": round(float(np.mean(answered)), 4) if answered else None,
        "per_class_recall": {label: round(float(np.mean(h)), 4) for label, h in sorted(per_class.items())},
        "per_class_support": {label: len(h) for label, h in sorted(per_class.items())},
    }


def probability_metrics(truth: Sequence[int], probabilities: np.ndarray) -> dict[str, Any]:
    """Metrics of class-probability rows (one per case) against class indices: cases, accuracy, macro-F1,
    recall per class index present in `truth`, and, with two classes, ROC AUC of class 1 (None when `truth`
    holds one class only)."""
    y = [int(label) for label in truth]
    if not y:
        return {"cases": 0, "accuracy": 0.0, "macro_f1": 0.0, "recall": {}}
    top = probabilities.argmax(axis=1)
    decisions = [
        Decision(labels=[str(label)], top=str(int(best)), probability=float(row[best]))
        for label, best, row in zip(y, top, probabilities, strict=True)
    ]
    shared = classification_metrics(decisions)
    metrics: dict[str, Any] = {
        "cases": len(y),
        "accuracy": shared["accuracy"],
        "macro_f1": shared["macro_f1"],
        "recall": {int(label): recall for label, recall in shared["per_class_recall"].items()},
    }
    if probabilities.shape[1] == 2:
        auc = roc_auc(y, probabilities[:, 1])
        metrics["auc"] = round(auc, 4) if np.isfinite(auc) else None  # None: one class only (JSON has no NaN)
    return metrics


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], *, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    conf = np.asarray(confidences, dtype=float)
    hit = np.asarray(correct, dtype=float)
    if not len(conf):
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += abs(hit[members].mean() - conf[members].mean()) * members.sum()
    return float(total / len(conf))


def roc_auc(truth: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    y = np.asarray(truth)
    s = np.asarray(scores, dtype=float)
    positive, negative = s[y == 1], s[y == 0]
    if not len(positive) or not len(negative):
        return float("nan")
    order = np.argsort(np.concatenate([positive, negative]), kind="stable")
    ranks = np.empty(len(order))
    values = np.concatenate([positive, negative])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float(
        (ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative))
    )
