"""Similar-case evidence must not count "no pneumothorax" as evidence for pneumothorax."""

from __future__ import annotations

import numpy as np

from kbservice.negation import mentions
from kbservice.recommend import evidence
from tests.helpers import case_record

CANDIDATES = ["Normal", "Pneumothorax", "Pleural effusion"]


CASES = {
    101: case_record(1, "Pneumothorax", findings="Large right pneumothorax.", chunk_id=101),
    102: case_record(2, "Normal", findings="No pneumothorax. Lungs clear.", chunk_id=102),
    103: case_record(3, "Pleural effusion", findings="Small left pleural effusion.", chunk_id=103),
}
# What text similarity returns for both texts: the pneumothorax case first (the word matches).
RANKING = [(101, 0.9), (102, 0.8), (103, 0.4)]


def _features(text: str) -> np.ndarray:
    return evidence.case_features(
        CANDIDATES, dense=RANKING, lexical=RANKING, cases_by_chunk=CASES, query=mentions(text)
    )


def test_a_negated_finding_gets_no_vote_from_cases_labelled_with_it() -> None:
    asserted, negated = _features("Right pneumothorax."), _features("No pneumothorax.")
    row = CANDIDATES.index("Pneumothorax")
    assert asserted[row, 0] > 0 and asserted[row, 1] > 0
    assert negated[row].tolist() == [0.0] * len(evidence.CASE_FEATURES)


def test_a_case_that_contradicts_the_request_votes_with_less_weight() -> None:
    # The normal case negates pneumothorax: for a request asserting it, its vote for Normal is discounted.
    asserted, negated = _features("Right pneumothorax."), _features("No pneumothorax.")
    row = CANDIDATES.index("Normal")
    assert negated[row, 0] > asserted[row, 0] and negated[row, 1] > asserted[row, 1]


def test_without_negation_handling_both_texts_vote_alike() -> None:
    plain = evidence.case_features(CANDIDATES, dense=RANKING, lexical=RANKING, cases_by_chunk=CASES)
    row = CANDIDATES.index("Pneumothorax")
    assert plain[row, 0] > 0  # the old behaviour: the word matched, the case voted


def test_mention_features_say_what_the_text_does_with_each_candidate() -> None:
    said = evidence.mention_features(CANDIDATES, mentions("No pneumothorax. Possible small pleural effusion."))
    assert said[CANDIDATES.index("Pneumothorax")].tolist() == [0.0, 1.0, 0.0]
    assert said[CANDIDATES.index("Pleural effusion")].tolist() == [0.0, 0.0, 1.0]
    assert said[CANDIDATES.index("Normal")].tolist() == [0.0, 0.0, 0.0]


def test_classifier_features_shift_known_labels_and_flag_unseen_ones() -> None:
    out = evidence.classifier_features(CANDIDATES, ["Normal", "Pneumothorax"], np.log(np.array([0.7, 0.3])))
    assert out[0].tolist() == [0.0, 0.0]
    assert np.isclose(out[1, 0], np.log(0.3) - np.log(0.7)) and out[1, 1] == 0.0
    assert np.isclose(out[2, 0], np.log(0.3) - np.log(0.7)) and out[2, 1] == 1.0  # unseen: the worst known value
