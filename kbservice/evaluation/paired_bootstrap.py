"""Summaries of repeated evaluation splits: mean and spread per condition, and paired differences between
conditions with a bootstrap interval.

Each split scores every condition on the same test cases, so two conditions are compared case by case
(paired). The bootstrap resamples each split's test cases with replacement, the same cases for both
conditions, recomputes the metric difference per split and averages it over the splits; the interval is
the 2.5th to 97.5th percentile of those averages. The splits themselves vary the training data; the
resampling adds the test-set noise, which with a hundred-odd test cases per split is the larger part.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class SplitDecisions:
    """One split's test cases: the true class and each condition's top answer, as class indices."""

    truth: np.ndarray  # (cases,)
    answers: Mapping[str, np.ndarray]  # condition -> (cases,)


def accuracy(truth: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Accuracy of each row of `answers` (resamples x cases, or one row) against the matching `truth` rows."""
    return (np.atleast_2d(truth) == np.atleast_2d(answers)).mean(axis=1)


def macro_f1(truth: np.ndarray, answers: np.ndarray, classes: int) -> np.ndarray:
    """Macro-F1 per row over the classes present in that row's truth (as `classification_metrics` counts
    it: a class never true does not enter the average, though answering it costs the true class precision)."""
    truth, answers = np.atleast_2d(truth), np.atleast_2d(answers)
    total = np.zeros(len(truth))
    present = np.zeros(len(truth))
    for label in range(classes):
        is_true, is_answer = truth == label, answers == label
        true_positive = (is_true & is_answer).sum(axis=1)
        support, answered = is_true.sum(axis=1), is_answer.sum(axis=1)
        denominator = support + answered
        f1 = np.divide(2 * true_positive, denominator, out=np.zeros(len(truth)), where=denominator > 0)
        total += np.where(support > 0, f1, 0.0)
        present += support > 0
    return np.divide(total, present, out=np.zeros(len(truth)), where=present > 0)


def _metric(name: str, truth: np.ndarray, answers: np.ndarray, classes: int) -> np.ndarray:
    return accuracy(truth, answers) if name == "accuracy" else macro_f1(truth, answers, classes)


def condition_summary(splits: Sequence[SplitDecisions], classes: int) -> dict[str, dict[str, float]]:
    """Per condition: mean and standard deviation over the splits of accuracy and macro-F1."""
    summary: dict[str, dict[str, float]] = {}
    for condition in splits[0].answers:
        row: dict[str, float] = {}
        for name in METRICS:
            values = [float(_metric(name, s.truth, s.answers[condition], classes)[0]) for s in splits]
            row[f"{name}_mean"] = round(statistics.fmean(values), 4)
            row[f"{name}_sd"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
        summary[condition] = row
    return summary


def paired_differences(
    splits: Sequence[SplitDecisions],
    *,
    condition: str,
    against: str,
    classes: int,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """`condition` minus `against`, per metric: the mean over splits of the per-split difference, and its
    bootstrap 95% interval (see the module doc). Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    sums = {name: np.zeros(resamples) for name in METRICS}
    observed = dict.fromkeys(METRICS, 0.0)
    for split in splits:
        cases = len(split.truth)
        picks = rng.integers(0, cases, size=(resamples, cases))
        truth = split.truth[picks]
        first, second = split.answers[condition][picks], split.answers[against][picks]
        for name in METRICS:
            sums[name] += _metric(name, truth, first, classes) - _metric(name, truth, second, classes)
            observed[name] += float(
                _metric(name, split.truth, split.answers[condition], classes)[0]
                - _metric(name, split.truth, split.answers[against], classes)[0]
            )
    result = {}
    for name in METRICS:
        means = sums[name] / len(splits)
        low, high = np.percentile(means, [2.5, 97.5])
        result[name] = {
            "difference": round(observed[name] / len(splits), 4),
            "ci95_low": round(float(low), 4),
            "ci95_high": round(float(high), 4),
        }
    return result


def per_class_recall(splits: Sequence[SplitDecisions], labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per condition and class: recall over the test cases of every split together (None: never true)."""
    result: dict[str, dict[str, float]] = {}
    for condition in splits[0].answers:
        truth = np.concatenate([s.truth for s in splits])
        answers = np.concatenate([s.answers[condition] for s in splits])
        result[condition] = {
            label: round(float((answers[truth == index] == index).mean()), 4)
            for index, label in enumerate(labels)
            if (truth == index).any()
        }
    return result
