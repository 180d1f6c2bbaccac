"""Choosing the modality of the fusion when held-out cases carry text and image evidence: text alone, image
alone, or both; one option holds (by default the lower-loss one of text and both) and another replaces it
only by beating it out of fold by a standard error."""

from __future__ import annotations

import numpy as np
import pytest

from kbservice.recommend import evidence
from kbservice.recommend.fusion import Fusion
from kbservice.recommend.group_selection import BOTH, TEXT, Example, fit_selected

NAMES = [*evidence.EVIDENCE_FEATURES, *evidence.LLM_FEATURES, *evidence.LLM_TEXT_FEATURES]
CANDIDATES = 6


def _column(name: str) -> int:
    return NAMES.index(name)


def _cases(n: int, *, seed: int, image: float | None, text: float = 1.0) -> list[Example]:
    """`n` cases whose text evidence (similar cases by text, the model reading the text) raises the true
    candidate by `text`. `image` None: requests without an image (the model's two score sets are then the
    same); else similar images raise it by `image` (0: pure noise), and the model reading text and image
    scores the text's evidence plus noise. The text part depends on `seed` only, so the same cases with and
    without images share it exactly."""
    text_rng, image_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1000)
    out = []
    for i in range(n):
        truth = i % CANDIDATES
        matrix = np.zeros((CANDIDATES, len(NAMES)))
        similar = text_rng.normal(size=CANDIDATES)
        model = text_rng.normal(size=CANDIDATES)
        similar[truth] += 1.5 * text
        model[truth] += text
        matrix[:, _column("dense_vote")] = similar
        matrix[:, _column("llm_text_mean_logprob")] = model
        matrix[:, _column("llm_mean_logprob")] = model
        if image is not None:
            votes = image_rng.normal(size=CANDIDATES)
            votes[truth] += image
            matrix[:, _column("image_vote")] = votes
            matrix[:, _column("llm_mean_logprob")] = model + image_rng.normal(size=CANDIDATES)
        out.append(Example(matrix=matrix, truth=[truth], label=f"d{truth}"))
    return out


def _nll(fusion: Fusion, examples: list[Example]) -> float:
    return float(np.mean([-np.log(fusion.probabilities(e.matrix, NAMES)[e.truth[0]]) for e in examples]))


def test_an_image_of_pure_noise_is_left_out_and_the_fusion_is_text_alone() -> None:
    text_only, _ = fit_selected(_cases(150, seed=0, image=None), NAMES, margin=None)
    fused, selection = fit_selected(_cases(150, seed=0, image=0.0), NAMES, margin=None)
    assert selection.modality == "text"
    assert selection.groups == ["similar_cases", "language_model_text"]
    assert [s["modality"] for s in selection.steps] == ["text", "image", "text and image"]
    # Chosen again inside each fold: with text holding, text is chosen there too, and the nested loss is text's
    # own. By default (the lower of text and both holds) a fold of 120 cases can let the noise in, and the
    # nested loss says what that costs.
    _, text_holding = fit_selected(_cases(150, seed=0, image=0.0), NAMES, margin=None, modality_holder=TEXT)
    assert text_holding.modality_nested_nll == text_holding.out_of_fold_nll == selection.out_of_fold_nll
    assert selection.modality_nested_nll is not None and selection.modality_nested_nll >= selection.out_of_fold_nll
    assert all(fused.weights[n] == 0.0 for n in (*evidence.IMAGE_FEATURES, *evidence.LLM_FEATURES))
    # New patients get exactly the answer their text alone gets.
    for with_image, without in zip(_cases(60, seed=9, image=0.0), _cases(60, seed=9, image=None), strict=True):
        np.testing.assert_array_equal(
            fused.probabilities(with_image.matrix, NAMES), text_only.probabilities(without.matrix, NAMES)
        )


def test_images_that_carry_the_label_are_chosen_with_the_text() -> None:
    fused, selection = fit_selected(_cases(150, seed=1, image=1.5), NAMES, margin=None)
    text_only, _ = fit_selected(_cases(150, seed=1, image=None), NAMES, margin=None)
    assert selection.modality == "text and image"
    assert {"similar_images", "similar_cases"} <= set(selection.groups)
    assert fused.weights["image_vote"] > 0
    text_loss = selection.steps[0]["out_of_fold_nll"]
    assert selection.modality_nested_nll is not None and selection.modality_nested_nll < text_loss
    assert _nll(fused, _cases(200, seed=2, image=1.5)) < _nll(text_only, _cases(200, seed=2, image=None)) - 0.05


def test_images_alone_are_chosen_when_the_text_says_nothing() -> None:
    fused, selection = fit_selected(_cases(150, seed=3, image=2.0, text=0.0), NAMES, margin=None)
    assert selection.modality == "image" and selection.groups == ["similar_images"]
    assert all(w == 0.0 for name, w in fused.weights.items() if name not in evidence.IMAGE_FEATURES)


def test_an_encoder_head_that_carries_the_label_enters_where_the_similar_images_are_noise() -> None:
    """The image modality has two groups: the neighbours' votes and the encoder's own class head. When only
    the head knows the diagnosis, the image enters through the head and the votes get no weight."""
    cases = _cases(150, seed=6, image=0.0, text=0.3)
    rng = np.random.default_rng(6)
    for case in cases:
        head = rng.normal(size=CANDIDATES)
        head[case.truth[0]] += 2.0
        case.matrix[:, _column("image_head_logprob")] = head - head.max()
    fused, selection = fit_selected(cases, NAMES, margin=0.005)
    assert selection.modality in ("image", "text and image")
    assert "image_classifier" in selection.groups
    assert [s["groups"] for s in selection.steps if s["direction"] == "forward"][1] == ["image_classifier"]
    assert fused.weights["image_head_logprob"] > 0
    assert all(fused.weights[n] == 0.0 for n in evidence.IMAGE_FEATURES)


def test_group_selection_runs_within_the_chosen_modality() -> None:
    _, selection = fit_selected(_cases(150, seed=0, image=0.0), NAMES, margin=0.005)
    assert selection.modality == "text"
    assert set(selection.groups) <= {"similar_cases", "language_model_text"}
    assert [s["direction"] for s in selection.steps][:3] == ["modality"] * 3
    assert "within the chosen modality: text" in selection.why


def test_the_modality_choice_is_deterministic() -> None:
    cases = _cases(120, seed=4, image=0.4)
    first = fit_selected(cases, NAMES, margin=None)
    second = fit_selected(list(cases), NAMES, margin=None)
    assert first[0] == second[0] and first[1].as_dict() == second[1].as_dict()


def test_without_a_modality_margin_both_modalities_enter() -> None:
    _, selection = fit_selected(_cases(150, seed=0, image=0.0), NAMES, margin=None, modality_margin=None)
    assert selection.modality is None and selection.modality_nested_nll is None
    assert (
        "similar_images" in selection.groups
        and "language_model" in selection.groups
        and "language_model_text" in selection.groups
    )


def test_text_only_cases_fit_as_they_did_before_the_model_scores_were_split() -> None:
    """Without images the text-alone scores copy the model's: that group is not considered, so a text-only
    knowledge base gets the same weights as with the model's scores alone."""
    cases = _cases(150, seed=5, image=None)
    before = [*evidence.EVIDENCE_FEATURES, *evidence.LLM_FEATURES]
    older = [Example(matrix=e.matrix[:, : len(before)], truth=e.truth, label=e.label) for e in cases]
    for margin in (None, 0.005):
        fusion, selection = fit_selected(cases, NAMES, margin=margin)
        earlier, earlier_selection = fit_selected(older, before, margin=margin)
        assert selection.modality is None and selection.modality_nested_nll is None
        assert "language_model_text" not in selection.groups
        assert selection.groups == earlier_selection.groups
        assert {n: fusion.weights[n] for n in before} == earlier.weights
        assert all(fusion.weights[n] == 0.0 for n in evidence.LLM_TEXT_FEATURES)


def test_text_holds_against_an_image_whose_lower_loss_is_within_noise() -> None:
    # Weak evidence on both sides, 60 held-out cases: image alone ends a little lower out of fold, by less
    # than a standard error of the paired difference, so text (what every request had before images) holds.
    _, selection = fit_selected(_cases(60, seed=19, image=0.45, text=0.3), NAMES, margin=None, modality_holder=TEXT)
    loss = {step["modality"]: step["out_of_fold_nll"] for step in selection.steps}
    assert loss["image"] < loss["text"]  # the premise: the lower mean alone would pick image
    assert selection.modality == "text"
    assert "image does not beat text" in selection.why


def test_where_both_hold_a_single_modality_must_beat_them() -> None:
    """`modality_holder` BOTH (triage text too weak to hold alone): text and image together hold unless one
    modality beats them out of fold by more than a standard error. Weak evidence on both sides: neither does,
    and both stay, where the text holder kept text on the same cases."""
    cases = _cases(60, seed=19, image=0.45, text=0.3)
    fused, selection = fit_selected(cases, NAMES, margin=None, modality_holder=BOTH)
    assert selection.modality == "text and image"
    assert "image does not beat text and image" in selection.why
    assert "text does not beat text and image" in selection.why
    assert fused.weights["image_vote"] > 0 and fused.weights["dense_vote"] > 0
    _, text_holding = fit_selected(cases, NAMES, margin=None, modality_holder=TEXT)
    assert text_holding.modality == "text"
    # The steps list every option's loss in the same order, whichever holds.
    assert [s["modality"] for s in selection.steps] == ["text", "image", "text and image"]


def test_where_both_hold_an_image_that_carries_the_label_alone_replaces_them() -> None:
    _, selection = fit_selected(_cases(150, seed=3, image=2.0, text=0.0), NAMES, margin=None, modality_holder=BOTH)
    assert selection.modality == "image" and selection.groups == ["similar_images"]
    assert "image beats text and image" in selection.why


def test_an_unknown_modality_holder_is_refused() -> None:
    with pytest.raises(ValueError, match="modality holder"):
        fit_selected(_cases(30, seed=0, image=0.0), NAMES, margin=None, modality_holder="image")


def test_by_default_the_lower_of_text_and_both_holds() -> None:
    """The default holder: text alone or text and image together, whichever ends lower out of fold (both is
    text plus the image's weights, so the lower mean decides between them); image alone, which drops the
    text, must still beat it by a standard error. Pure-noise images lose to text (the noise only adds loss),
    and the answer is then exactly text's; weak but real image evidence lowers the loss, and both hold."""
    _, noise = fit_selected(_cases(150, seed=0, image=0.0), NAMES, margin=None)
    assert noise.modality == "text"
    assert noise.why.startswith("every group of the chosen modality: text (") and "text holds (the lower" in noise.why
    weak = _cases(60, seed=19, image=0.45, text=0.3)
    _, selection = fit_selected(weak, NAMES, margin=None)
    loss = {step["modality"]: step["out_of_fold_nll"] for step in selection.steps}
    assert loss["text and image"] < loss["text"] and loss["image"] < loss["text and image"]  # the premise
    assert selection.modality == "text and image"  # the lower of text and both; image is not significantly lower
    assert "text and image holds (the lower" in selection.why and "image does not beat text and image" in selection.why
