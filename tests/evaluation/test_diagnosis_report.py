"""The parts of `eval diagnosis` that need no model: baselines, risk-coverage, the verdict and DDXPlus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kbservice.classification import Decision
from kbservice.classifier.baselines import FITTERS, TrainTest
from kbservice.evaluation.ddxplus import gold_mass_covered, render_patient, write_ddxplus_split
from kbservice.evaluation.diagnosis import risk_coverage, verdict
from tests.conftest import SHARED_DATA

DDXPLUS = SHARED_DATA / "ddxplus"


def _data() -> TrainTest:
    rng = np.random.default_rng(0)
    centres = {"a": np.array([1.0, 0, 0]), "b": np.array([0, 1.0, 0]), "c": np.array([0, 0, 1.0])}
    labels = ["a"] * 8 + ["b"] * 4 + ["c"] * 4
    texts = [{"a": "alpha fever", "b": "beta rash", "c": "gamma cough"}[label] for label in labels]
    vectors = np.array([centres[label] + rng.normal(scale=0.05, size=3) for label in labels])
    test_vectors = np.array([centres["b"], centres["c"], centres["a"]])
    return TrainTest(texts, vectors, labels, ["beta rash", "gamma cough", "alpha fever"], test_vectors)


def test_every_baseline_gives_probability_rows_over_the_training_labels() -> None:
    data = _data()
    for name, fitter in FITTERS.items():
        p = fitter(data)
        assert p.shape == (3, 3) and np.allclose(p.sum(axis=1), 1.0), name
        if name != "majority":
            assert [data.labels[i] for i in p.argmax(axis=1)] == ["b", "c", "a"], name
    assert FITTERS["majority"](data).argmax(axis=1).tolist() == [0, 0, 0]  # "a" is the commonest


def test_risk_coverage_is_accuracy_on_the_most_confident_cases() -> None:
    decisions = [Decision(labels=["x"], top="x" if i < 8 else "y", probability=1 - i / 10) for i in range(10)]
    assert risk_coverage(decisions) == {
        "accuracy_at_100pct": 0.8,
        "accuracy_at_90pct": 0.8889,
        "accuracy_at_80pct": 1.0,
    }


def test_the_verdict_says_plainly_when_kbservice_does_not_beat_a_baseline() -> None:
    result = {
        "accuracy": 0.9,
        "macro_f1": 0.7,
        "baselines": {
            "majority": {"accuracy": 0.6, "macro_f1": 0.2},
            "tfidf_logreg": {"accuracy": 0.85, "macro_f1": 0.75},
        },
    }
    said = verdict(result)
    assert not said["beats_every_baseline"] and said["best_baseline"] == "tfidf_logreg"
    assert said["beats_best_on_accuracy"] and not said["beats_best_on_macro_f1"]
    assert "does NOT beat" in said["text"] and "tfidf_logreg" in said["text"]
    result["macro_f1"] = 0.8
    assert verdict(result)["beats_every_baseline"] and "beats every baseline" in verdict(result)["text"]


def test_gold_mass_covered_by_a_top_list() -> None:
    gold = [["Flu", 0.5], ["URTI", 0.3], ["Pneumonia", 0.2]]
    assert gold_mass_covered(gold, ["flu", "Pneumonia"]) == pytest.approx(0.7)
    assert gold_mass_covered(gold, []) == 0.0


def test_ddxplus_rendering_uses_the_questions_and_values() -> None:
    evidences = {
        "E_1": {"question_en": "Do you have a fever?", "data_type": "B", "is_antecedent": False},
        "E_2": {
            "question_en": "Characterize your pain:",
            "data_type": "M",
            "is_antecedent": False,
            "value_meaning": {"V_1": {"en": "sharp"}, "V_2": {"en": "burning"}},
        },
        "E_3": {"question_en": "How intense is the pain?", "data_type": "C", "is_antecedent": False},
        "E_4": {"question_en": "Do you smoke cigarettes?", "data_type": "B", "is_antecedent": True},
    }
    findings, history = render_patient(["E_1", "E_2_@_V_1", "E_2_@_V_2", "E_3_@_7", "E_4"], evidences)
    assert (
        findings == "Do you have a fever? Yes. Characterize your pain: sharp, burning. How intense is the pain? 7/10."
    )
    assert history == "Do you smoke cigarettes? Yes."


@pytest.mark.skipif(not DDXPLUS.exists(), reason="../shared/data/ddxplus is absent")
def test_ddxplus_split_is_by_patient_stratified_and_seeded(tmp_path: Path) -> None:
    summary = write_ddxplus_split(DDXPLUS, out_dir=tmp_path / "a", seed=0, limit=400)
    again = write_ddxplus_split(DDXPLUS, out_dir=tmp_path / "b", seed=0, limit=400)
    assert summary["train"] + summary["test"] == 400 and summary["test"] == again["test"]
    train = [json.loads(line) for line in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (tmp_path / "a" / "test.jsonl").read_text().splitlines()]
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert (tmp_path / "a" / "test.jsonl").read_text() == (tmp_path / "b" / "test.jsonl").read_text()
    gold = json.loads((tmp_path / "a" / "test_differentials.json").read_text())
    assert set(gold) == {r["id"] for r in test}
    assert all(r["findings"] and r["sex"] in ("F", "M") and r["age"] for r in test)
    assert 0.2 < len(test) / 400 < 0.4
