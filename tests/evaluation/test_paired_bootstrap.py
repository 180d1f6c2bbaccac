"""Repeated-split summaries: macro-F1 as the service counts it, paired differences and their intervals."""

from __future__ import annotations

import numpy as np
import pytest

from kbservice.classification import Decision, classification_metrics
from kbservice.evaluation.paired_bootstrap import (
    SplitDecisions,
    accuracy,
    condition_summary,
    macro_f1,
    paired_differences,
    per_class_recall,
)


def _split(truth: list[int], **answers: list[int]) -> SplitDecisions:
    return SplitDecisions(truth=np.asarray(truth), answers={k: np.asarray(v) for k, v in answers.items()})


def test_macro_f1_and_accuracy_agree_with_the_service_metrics() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        truth = rng.integers(0, 3, size=40)
        answers = np.where(rng.random(40) < 0.6, truth, rng.integers(-1, 4, size=40))  # -1, 3: outside the classes
        pairs = zip(truth, answers, strict=True)
        decisions = [Decision(labels=[str(t)], top=str(a), probability=0.5) for t, a in pairs]
        expected = classification_metrics(decisions)
        assert macro_f1(truth, answers, 3)[0] == pytest.approx(expected["macro_f1"], abs=5e-5)
        assert accuracy(truth, answers)[0] == pytest.approx(expected["accuracy"], abs=5e-5)


def test_identical_conditions_differ_by_exactly_zero() -> None:
    splits = [_split([0, 1, 2, 1, 0], a=[0, 1, 1, 1, 2], b=[0, 1, 1, 1, 2]) for _ in range(3)]
    result = paired_differences(splits, condition="a", against="b", classes=3)
    for metric in ("accuracy", "macro_f1"):
        assert result[metric] == {"difference": 0.0, "ci95_low": 0.0, "ci95_high": 0.0}


def test_a_condition_right_where_the_other_is_wrong_has_an_interval_above_zero() -> None:
    rng = np.random.default_rng(0)
    splits = []
    for _ in range(5):
        truth = rng.integers(0, 3, size=100)
        better = np.where(rng.random(100) < 0.9, truth, (truth + 1) % 3)
        worse = np.where(rng.random(100) < 0.6, truth, (truth + 1) % 3)
        splits.append(SplitDecisions(truth=truth, answers={"fused": better, "text": worse}))
    result = paired_differences(splits, condition="fused", against="text", classes=3, seed=1)
    assert 0.2 < result["accuracy"]["difference"] < 0.4
    assert 0 < result["accuracy"]["ci95_low"] < result["accuracy"]["difference"] < result["accuracy"]["ci95_high"]
    assert result["macro_f1"]["ci95_low"] > 0
    assert paired_differences(splits, condition="fused", against="text", classes=3, seed=1) == result
    backwards = paired_differences(splits, condition="text", against="fused", classes=3, seed=1)
    assert backwards["accuracy"]["difference"] == -result["accuracy"]["difference"]
    assert backwards["accuracy"]["ci95_high"] < 0


def test_summary_means_spreads_and_per_class_recall() -> None:
    splits = [_split([0, 0, 1, 1], a=[0, 0, 1, 1]), _split([0, 0, 1, 1], a=[0, 1, 1, 1])]
    summary = condition_summary(splits, classes=2)["a"]
    assert summary["accuracy_mean"] == 0.875 and summary["accuracy_sd"] == pytest.approx(0.1768, abs=1e-4)
    assert per_class_recall(splits, ["no", "yes"]) == {"a": {"no": 0.75, "yes": 1.0}}
