"""The promotion gate's rules on given metrics, and the binomial tail behind the poisoning guard."""

from __future__ import annotations

import math

from kbservice.config import LearnSettings
from kbservice.learn.gate import binomial_tail, compare


def _metrics(macro_f1: float, ece: float, recall: dict[str, float], support: dict[str, int]) -> dict:
    return {"macro_f1": macro_f1, "ece": ece, "per_class_recall": recall, "per_class_support": support}


def test_gate_passes_equal_and_rejects_each_kind_of_regression() -> None:
    settings = LearnSettings()
    support = {"Asthma": 5, "COPD": 5, "Rare": 2}
    champion = _metrics(0.90, 0.05, {"Asthma": 1.0, "COPD": 0.8, "Rare": 1.0}, support)
    assert compare(champion, champion, settings)[0]

    one_case = _metrics(0.895, 0.05, {"Asthma": 0.8, "COPD": 0.8, "Rare": 1.0}, support)
    assert compare(one_case, champion, settings)[0]  # one case of five is noise, not a regression

    two_cases = _metrics(0.895, 0.05, {"Asthma": 0.6, "COPD": 0.8, "Rare": 1.0}, support)
    passed, reasons, checks = compare(two_cases, champion, settings)
    assert not passed and "worst 'Asthma' 1.00 -> 0.60" in reasons[0]
    assert list(checks["class_recall"]["regressions"]) == ["Asthma"]

    small_class = _metrics(0.90, 0.05, {"Asthma": 1.0, "COPD": 0.8, "Rare": 0.0}, support)
    assert compare(small_class, champion, settings)[0]  # below class_min_support: judged through macro-F1 only

    f1_drop = _metrics(0.85, 0.05, champion["per_class_recall"], support)
    passed, reasons, _ = compare(f1_drop, champion, settings)
    assert not passed and "macro-F1 fell from 0.9000 to 0.8500" in reasons[0]

    worse_calibrated = _metrics(0.90, 0.10, champion["per_class_recall"], support)
    passed, reasons, _ = compare(worse_calibrated, champion, settings)
    assert not passed and "calibration degraded: ECE 0.0500 -> 0.1000" in reasons[0]


def test_binomial_tail() -> None:
    assert math.isclose(binomial_tail(0, 10, 0.3), 1.0)
    assert math.isclose(binomial_tail(10, 10, 0.5), 0.5**10)
    assert math.isclose(binomial_tail(1, 3, 0.5), 1 - 0.5**3)
    assert binomial_tail(22, 50, 0.125) < 1e-6 < binomial_tail(8, 50, 0.08)
