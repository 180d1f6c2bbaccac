"""Evidence-group selection for the fusion: forward selection and backward elimination by out-of-fold
log-loss, and the lower of the two."""

from __future__ import annotations

import numpy as np
import pytest

from kbservice.recommend import evidence
from kbservice.recommend.group_selection import FEATURE_GROUPS, Example, fit_selected

NAMES = [*evidence.EVIDENCE_FEATURES, *evidence.LLM_FEATURES]
CANDIDATES = 8
# The groups these examples have columns for (not the model's text-alone scores: requests without images).
GROUPS = {g for g, names in FEATURE_GROUPS.items() if any(n in NAMES for n in names)}


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


def _final(selection, direction: str) -> dict:  # type: ignore[no-untyped-def]
    return [step for step in selection.steps if step["direction"] == direction][-1]


@pytest.mark.parametrize(
    ("signal", "seed"),
    [
        ({"dense_vote": 2.0, "dense_best": 1.0}, 0),
        ({"classifier_logprob": 2.5, "llm_mean_logprob": 1.2}, 0),
        ({"classifier_logprob": 0.6, "dense_vote": 0.6, "mention_affirmed": 0.4}, 3),
    ],
)
def test_the_path_that_ends_lower_out_of_fold_is_chosen(signal: dict[str, float], seed: int) -> None:
    examples = _examples(160, signal=signal, seed=seed)
    fusion, selection = fit_selected(examples, NAMES, margin=0.005)
    forward, backward = _final(selection, "forward"), _final(selection, "backward")
    lower = min((backward, forward), key=lambda step: (step["out_of_fold_nll"], -len(step["groups"])))
    assert selection.groups == lower["groups"]
    assert selection.why.startswith("forward selection" if lower is forward else "backward elimination")
    # The shrinkage is then chosen out of fold too: never worse than the path's own default.
    assert selection.out_of_fold_nll is not None and selection.out_of_fold_nll <= lower["out_of_fold_nll"] + 1e-9
    unused = [n for g, names in FEATURE_GROUPS.items() if g not in selection.groups for n in names if n in NAMES]
    assert all(fusion.weights[n] == 0.0 for n in unused)
    informative = {n for n in signal}
    assert all(fusion.weights[n] > 0 for n in informative if any(n in FEATURE_GROUPS[g] for g in selection.groups))


def test_forward_selection_adds_complementary_groups_in_order_of_their_gain() -> None:
    examples = _examples(200, signal={"classifier_logprob": 2.5, "llm_mean_logprob": 1.2})
    _, selection = fit_selected(examples, NAMES, margin=0.005)
    forward = [step for step in selection.steps if step["direction"] == "forward"]
    assert [step["groups"] for step in forward] == [[], ["classifier"], ["classifier", "language_model"]]
    losses = [step["out_of_fold_nll"] for step in forward]
    assert losses == sorted(losses, reverse=True)
    assert {"classifier", "language_model"} <= set(selection.groups)


def test_the_margin_decides_whether_a_weak_group_enters_or_leaves() -> None:
    examples = _examples(200, signal={"classifier_logprob": 2.5, "llm_mean_logprob": 1.2})
    _, loose = fit_selected(examples, NAMES, margin=0.0)
    _, strict = fit_selected(examples, NAMES, margin=0.5)
    assert _final(loose, "forward")["groups"] == ["classifier", "language_model"]
    assert _final(strict, "forward")["groups"] == ["classifier"]  # the model's gain is below 0.5 nats
    # ... and with so strict a margin no group earns its removal either: backward keeps every group
    assert set(_final(strict, "backward")["groups"]) == GROUPS


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
    assert set(selection.groups) == GROUPS  # every group varies across candidates here
    assert fusion.weights["dense_vote"] > 0


def test_no_usable_example_is_an_error() -> None:
    with pytest.raises(ValueError, match="no example"):
        fit_selected([Example(matrix=np.zeros((3, len(NAMES))), truth=[], label="x")], NAMES, margin=0.0)


def test_without_a_margin_every_informative_group_enters_as_before_selection() -> None:
    # recommend.fusion_group_margin unset: the fusion is fitted on every informative group (the model's
    # scores carry a weak signal, so their fitted weight is positive when they take part in the fit).
    # With the modality choice off too (these examples' image features are noise, which it would leave out).
    examples = _examples(160, signal={"dense_vote": 2.0, "llm_mean_logprob": 0.3})
    fusion, selection = fit_selected(examples, NAMES, margin=None, modality_margin=None)
    assert set(selection.groups) == GROUPS and "selection is off" in selection.why
    assert fusion.weights["dense_vote"] > 0 and any(fusion.weights[n] != 0 for n in evidence.LLM_FEATURES)
