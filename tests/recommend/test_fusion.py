"""Fusion weights fitted by maximum likelihood recover a known temperature and give calibrated output."""

from __future__ import annotations

import numpy as np
import pytest

from kbservice.classification import expected_calibration_error
from kbservice.recommend.fusion import Fusion, fit_fusion, softmax


def synthetic(rng: np.random.Generator, *, n: int, weights: np.ndarray, candidates: int = 6):  # type: ignore[no-untyped-def]
    """Examples whose true label is drawn from softmax(features @ weights): the fit should find `weights`."""
    features, truths = [], []
    for _ in range(n):
        x = rng.normal(size=(candidates, len(weights)))
        truths.append([int(rng.choice(candidates, p=softmax(x @ weights)))])
        features.append(x)
    return features, truths


def test_recovers_the_generating_weights() -> None:
    rng = np.random.default_rng(0)
    true_weights = np.array([2.0, -0.5, 0.0])
    features, truths = synthetic(rng, n=3000, weights=true_weights)
    fusion = fit_fusion(features, truths, ["a", "b", "c"])
    assert [fusion.weights[k] for k in "abc"] == pytest.approx(true_weights.tolist(), abs=0.15)


def test_signs_keep_each_weight_on_its_evidence_side() -> None:
    rng = np.random.default_rng(2)
    # "a" supports its candidate, "b" is drawn as counter-evidence although declared supporting, "c" is
    # drawn as support although declared counter-evidence, "d" is free.
    true_weights = np.array([1.5, -1.0, 0.8, -0.7])
    features, truths = synthetic(rng, n=2000, weights=true_weights)
    names = ["a", "b", "c", "d"]
    free = fit_fusion(features, truths, names)
    signed = fit_fusion(features, truths, names, signs={"a": 1, "b": 1, "c": -1})
    assert free.weights["b"] < -0.5 and free.weights["c"] > 0.4  # the data alone would flip them
    assert signed.weights["b"] == 0.0 and signed.weights["c"] == 0.0  # held at the bound, not past it
    assert signed.weights["a"] > 1.0 and signed.weights["d"] < -0.4  # the rest still fitted


def test_signs_that_do_not_bind_change_nothing() -> None:
    rng = np.random.default_rng(3)
    features, truths = synthetic(rng, n=1000, weights=np.array([1.0, -0.5]))
    free = fit_fusion(features, truths, ["a", "b"])
    signed = fit_fusion(features, truths, ["a", "b"], signs={"a": 1, "b": -1})
    assert signed.weights == pytest.approx(free.weights, abs=1e-9)


def test_single_feature_is_temperature_scaling_and_calibrates() -> None:
    rng = np.random.default_rng(1)
    features, truths = synthetic(rng, n=3000, weights=np.array([0.5]))  # an over-confident score at weight 1
    overconfident = Fusion(weights={"llm": 1.0})
    fitted = fit_fusion(features, truths, ["llm"])
    assert fitted.weights["llm"] == pytest.approx(0.5, abs=0.08)

    def ece(fusion: Fusion) -> float:
        probabilities = [fusion.probabilities(x, ["llm"]) for x in features]
        confidences = [float(p.max()) for p in probabilities]
        correct = [int(np.argmax(p)) in t for p, t in zip(probabilities, truths, strict=True)]
        return expected_calibration_error(confidences, correct)

    assert ece(fitted) < 0.03 < ece(overconfident)


def test_separable_data_and_missing_labels_stay_finite() -> None:
    x = np.array([[5.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    fusion = fit_fusion([x, x, x], [[0], [0], []], ["best", "other"])
    assert all(np.isfinite(list(fusion.weights.values())))
    assert fusion.weights["best"] > 0
    with pytest.raises(ValueError, match="no example"):
        fit_fusion([x], [[]], ["best", "other"])


def _reference_objective(w: np.ndarray, features, truths, weights, l2: float) -> float:  # type: ignore[no-untyped-def]
    """The fit's objective written out one example at a time, as its definition reads."""
    total = l2 * float(w @ w)
    for x, truth, weight in zip(features, truths, weights, strict=True):
        p = softmax(x @ w)
        total -= weight * float(np.log(p[truth].sum())) / len(features)
    return total


def test_the_fit_minimises_its_objective_over_candidate_sets_of_different_sizes() -> None:
    """The fit stacks the examples into one padded array: the padding must count for nothing. Examples have 2
    to 9 candidates, some two true labels, unequal weights; the fitted weights are where the objective,
    computed one example at a time, is lowest: no small step in any direction lowers it."""
    rng = np.random.default_rng(7)
    features = [rng.normal(size=(int(rng.integers(2, 10)), 3)) for _ in range(150)]
    truths = [list(rng.choice(len(x), size=1 + i % 2, replace=False)) for i, x in enumerate(features)]
    for x, truth in zip(features, truths, strict=True):
        x[truth, 0] += 1.0  # feature 0 carries the label
    weights = rng.uniform(0.5, 2.0, size=len(features))
    names = ["a", "b", "c"]
    fusion = fit_fusion(features, truths, names, example_weights=weights, l2=1e-3)
    w = np.array([fusion.weights[n] for n in names])
    best = _reference_objective(w, features, truths, weights, 1e-3)
    for direction in np.vstack([np.eye(3), -np.eye(3)]):
        assert _reference_objective(w + 1e-3 * direction, features, truths, weights, 1e-3) > best
    assert fusion.weights["a"] > 0.5


def test_probabilities_sum_to_one_and_unknown_features_count_zero() -> None:
    fusion = Fusion(weights={"a": 1.0, "gone": 3.0})
    p = fusion.probabilities(np.array([[1.0, 9.0], [2.0, -9.0]]), ["a", "new"])
    assert p.sum() == pytest.approx(1.0)
    assert p[1] > p[0]  # only "a" counts; "new" has no weight


def test_expected_calibration_error() -> None:
    assert expected_calibration_error([0.9] * 10, [True] * 9 + [False]) == pytest.approx(0.0)
    assert expected_calibration_error([1.0] * 4, [False] * 4) == pytest.approx(1.0)
    assert expected_calibration_error([], []) == 0.0


def test_image_head_features_map_the_encoder_labels_onto_the_candidates() -> None:
    from kbservice.recommend.evidence import image_head_features

    head = [["COVID-19", 0.7], ["No finding", 0.3], ["Pneumonia", 0.0]]
    features = image_head_features(["covid-19", "Pneumonia", "Tuberculosis", "No Finding"], head)
    floor = np.log(1e-6) - np.log(0.7)  # a probability of 0 is floored, never an infinite log
    np.testing.assert_allclose(features, [[0.0, 0.0], [floor, 0.0], [floor, 1.0], [np.log(0.3 / 0.7), 0.0]], rtol=1e-12)
    assert not image_head_features(["covid-19", "Pneumonia"], []).any()  # no image or no head: nothing said
