"""Evidence-group selection for the fusion: a group enters only if it lowers the out-of-fold log-loss."""

from __future__ import annotations

import numpy as np
import pytest

from kbservice.recommend import evidence
from kbservice.recommend.fusion import balanced_weights, fit_fusion
from kbservice.recommend.group_selection import FEATURE_GROUPS, Example, fit_selected

NAMES = [*evidence.EVIDENCE_FEATURES, *evidence.LLM_FEATURES]
CANDIDATES = 8


def _examples(n: int, *, signal: dict[str, float], seed: int = 0) -> list[Example]:
    """`n` cases over CANDIDATES candidates: every feature is Gaussian noise, and the true candidate's
    `signal` features are raised by the given amounts (the strength of that evidence)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        matrix = rng.normal(size=(CANDIDATES, len(NAMES)))
        truth = i % CANDIDATES
        for name, strength in signal.items():
            matrix[truth, NAMES.index(name)] += strength
        out.append(Example(matrix=matrix, truth=[truth], label=f"d{truth}"))
    return out


def _out_of_sample_nll(fusion, examples: list[Example]) -> float:  # type: ignore[no-untyped-def]
    return float(np.mean([-np.log(fusion.probabilities(e.matrix, NAMES)[e.truth[0]]) for e in examples]))


def test_a_noise_group_is_left_out_and_the_fusion_equals_the_informative_group_alone() -> None:
    examples = _examples(160, signal={"dense_vote": 2.0, "dense_best": 1.0})
    fusion, selection = fit_selected(examples, NAMES, margin=0.005)
    assert selection.groups == ["similar_cases"]
    noise = [n for g, names in FEATURE_GROUPS.items() if g != "similar_cases" for n in names]
    assert all(fusion.weights[n] == 0.0 for n in noise)
    assert fusion.weights["dense_vote"] > fusion.weights["dense_best"] > 0
    # On fresh cases the selected fusion is no worse than one fitted on every feature (which overfits).
    fresh = _examples(400, signal={"dense_vote": 2.0, "dense_best": 1.0}, seed=1)
    everything = fit_fusion(
        [e.matrix for e in examples],
        [e.truth for e in examples],
        NAMES,
        example_weights=balanced_weights([e.label for e in examples]),
    )
    assert _out_of_sample_nll(fusion, fresh) <= _out_of_sample_nll(everything, fresh)


def test_complementary_groups_both_enter_in_order_of_their_gain() -> None:
    examples = _examples(200, signal={"classifier_logprob": 2.5, "llm_mean_logprob": 1.2})
    _, selection = fit_selected(examples, NAMES, margin=0.005)
    assert selection.groups == ["classifier", "language_model"]
    losses = [step["out_of_fold_nll"] for step in selection.steps]
    assert losses == sorted(losses, reverse=True) and len(losses) == 3  # none, + classifier, + model
    assert selection.out_of_fold_nll is not None and selection.out_of_fold_nll <= losses[-1] + 1e-9


def test_the_margin_decides_whether_a_weak_group_enters() -> None:
    examples = _examples(200, signal={"classifier_logprob": 2.5, "llm_mean_logprob": 1.2})
    _, loose = fit_selected(examples, NAMES, margin=0.0)
    _, strict = fit_selected(examples, NAMES, margin=0.5)
    assert "classifier" in loose.groups and "classifier" in strict.groups
    assert "language_model" in loose.groups and strict.groups == ["classifier"]


def test_selection_is_deterministic() -> None:
    examples = _examples(120, signal={"dense_vote": 1.5, "llm_mean_logprob": 1.0})
    first, second = fit_selected(examples, NAMES, margin=0.005), fit_selected(examples, NAMES, margin=0.005)
    assert first[0].weights == second[0].weights and first[1] == second[1]


def test_a_group_constant_across_candidates_is_not_considered() -> None:
    examples = _examples(60, signal={"dense_vote": 2.0})
    columns = [NAMES.index(n) for n in evidence.IMAGE_FEATURES]
    for e in examples:
        e.matrix[:, columns] = 0.0  # no images: the image features cannot move the softmax
    _, selection = fit_selected(examples, NAMES, margin=0.005)
    assert "similar_images" not in selection.why and "similar_cases" in selection.groups


def test_too_few_cases_to_cross_validate_keeps_every_informative_group_and_says_why() -> None:
    examples = _examples(12, signal={"dense_vote": 2.0})
    fusion, selection = fit_selected(examples, NAMES, margin=0.005)
    assert selection.out_of_fold_nll is None and "too few" in selection.why
    assert set(selection.groups) == set(FEATURE_GROUPS)  # every group varies across candidates here
    assert fusion.weights["dense_vote"] > 0


def test_no_usable_example_is_an_error() -> None:
    with pytest.raises(ValueError, match="no example"):
        fit_selected([Example(matrix=np.zeros((3, len(NAMES))), truth=[], label="x")], NAMES, margin=0.0)


def test_without_a_margin_every_informative_group_enters_as_before_selection() -> None:
    # The default (recommend.fusion_group_margin unset): on symptom2disease selection kept only the similar
    # cases and lost accuracy, so it is opt-in; unset, the fusion is fitted on every informative group.
    examples = _examples(160, signal={"dense_vote": 2.0})
    fusion, selection = fit_selected(examples, NAMES, margin=None)
    assert set(selection.groups) == set(FEATURE_GROUPS) and "selection is off" in selection.why
    assert fusion.weights["dense_vote"] > 0 and any(fusion.weights[n] != 0 for n in evidence.LLM_FEATURES)
