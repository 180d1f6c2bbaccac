"""Image-case metrics: accuracy, macro-F1 and (two classes) ROC AUC from class probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


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


def classification_metrics(truth: Sequence[int], probabilities: np.ndarray) -> dict[str, Any]:
    """accuracy, macro-F1 over the classes present in `truth`, per-class recall and (two classes) AUC."""
    y = np.asarray(truth)
    predicted = probabilities.argmax(axis=1)
    f1s, recalls = [], {}
    for label in sorted(set(y.tolist())):
        tp = int(((predicted == label) & (y == label)).sum())
        fp = int(((predicted == label) & (y != label)).sum())
        fn = int(((predicted != label) & (y == label)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
        recalls[int(label)] = tp / (tp + fn) if tp + fn else 0.0
    metrics: dict[str, Any] = {
        "cases": len(y),
        "accuracy": round(float((predicted == y).mean()), 4) if len(y) else 0.0,
        "macro_f1": round(float(np.mean(f1s)), 4) if f1s else 0.0,
        "recall": recalls,
    }
    if probabilities.shape[1] == 2:
        metrics["auc"] = round(roc_auc(y, probabilities[:, 1]), 4)
    return metrics
