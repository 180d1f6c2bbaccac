"""The NegEx-style rules: hand-written report pairs that differ only by negation or hedging."""

from __future__ import annotations

import pytest

from kbservice.negation import mark, marked_tokens, mentions

PAIRS = [
    ("Right pneumothorax.", "No pneumothorax.", "pneumothorax"),
    ("Small left pleural effusion.", "No pleural effusion.", "effusion"),
    (
        "Focal consolidation in the right lower lobe.",
        "No focal consolidation in the right lower lobe.",
        "consolidation",
    ),
    ("The patient reports fever.", "The patient denies fever.", "fever"),
    ("Cardiomegaly is present.", "Cardiomegaly is ruled out.", "cardiomegaly"),
    ("Pneumonia.", "Negative for pneumonia.", "pneumonia"),
]


def _assertion(text: str, word: str) -> str:
    return next(m.assertion for m in mark(text) if m.word == word)


@pytest.mark.parametrize(("affirmed", "negated", "finding"), PAIRS)
def test_pairs_that_differ_only_by_negation_are_marked_apart(affirmed: str, negated: str, finding: str) -> None:
    assert _assertion(affirmed, finding) == "affirmed"
    assert _assertion(negated, finding) == "negated"
    assert marked_tokens(affirmed) != marked_tokens(negated)


def test_a_negated_list_negates_every_finding_in_it() -> None:
    text = "No focal consolidation, pleural effusion or pneumothorax."
    said = mentions(text)
    assert {"consolidation", "effusion", "pneumothorax", "pleural"} <= said.negated
    assert said.mention("Pleural effusion") == (0.0, 1.0, 0.0)
    assert said.mention("Pneumothorax") == (0.0, 1.0, 0.0)


def test_scope_ends_at_a_clause_or_a_contrast() -> None:
    text = "No pneumothorax. Large left effusion."
    assert _assertion(text, "effusion") == "affirmed"
    text = "Pneumonia is ruled out but there is a small effusion."
    assert _assertion(text, "pneumonia") == "negated" and _assertion(text, "effusion") == "affirmed"
    text = "Patient denies chest pain and has a productive cough."
    assert _assertion(text, "pain") == "negated" and _assertion(text, "cough") == "affirmed"


def test_hedged_findings_are_uncertain_not_affirmed() -> None:
    for text in ("Possible left lower lobe pneumonia.", "Cannot exclude pneumonia.", "Pneumonia is likely."):
        assert _assertion(text, "pneumonia") == "uncertain", text
    assert mentions("Possible pneumonia.").mention("Pneumonia") == (0.0, 0.0, 1.0)


def test_pseudo_negations_negate_nothing() -> None:
    assert _assertion("No change in the right pleural effusion.", "effusion") == "affirmed"
    assert _assertion("No interval change of the cardiomegaly.", "cardiomegaly") == "affirmed"


def test_post_triggers_reach_back_over_the_finding_only() -> None:
    assert _assertion("The patient is pain free.", "pain") == "negated"
    assert _assertion("The patient is pain free.", "patient") == "affirmed"
    assert _assertion("Effusion not seen.", "effusion") == "negated"
