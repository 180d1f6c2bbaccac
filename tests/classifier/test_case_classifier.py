"""The case classifier: negation-aware features, class balance, exact storage round trip, C chosen on the
training cases only."""

from __future__ import annotations

import numpy as np
import pytest

from kbservice.classifier.lexical import LexicalFeatures, ngrams
from kbservice.classifier.model import CaseClassifier, ClassifierSettings

REPORTS = {
    "Pneumothorax": ["Large right pneumothorax.", "Small apical pneumothorax on the left.", "Tension pneumothorax."],
    "Normal": [
        "No pneumothorax. Lungs are clear.",
        "No pneumothorax or pleural effusion.",
        "Heart size normal. No effusion or pneumothorax.",
        "Lungs clear. No focal consolidation.",
        "No acute cardiopulmonary process.",
        "No pleural effusion, no pneumothorax.",
    ],
    "Pleural effusion": ["Moderate left pleural effusion.", "Bilateral pleural effusions.", "Small right effusion."],
}


def _data(dim: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    texts = [t for texts in REPORTS.values() for t in texts]
    labels = [label for label, texts in REPORTS.items() for _ in texts]
    return texts, np.zeros((len(texts), dim)), labels


def test_ngrams_tell_a_finding_from_its_negation() -> None:
    assert "pneumothorax" in ngrams("Right pneumothorax.")
    assert "pneumothorax" not in ngrams("No pneumothorax.") and "neg_pneumothorax" in ngrams("No pneumothorax.")


def test_negation_pairs_score_differently_and_the_negated_one_is_not_the_finding() -> None:
    texts, vectors, labels = _data()
    model = CaseClassifier.fit(texts, vectors, labels, settings=ClassifierSettings())
    scores = model.log_probabilities(["Small pneumothorax.", "No pneumothorax."], np.zeros((2, 0)))
    pneumothorax = model.labels.index("Pneumothorax")
    assert scores[0, pneumothorax] > scores[1, pneumothorax] + 0.25
    assert model.labels[int(np.argmax(scores[0]))] == "Pneumothorax"
    assert model.labels[int(np.argmax(scores[1]))] == "Normal"


def test_class_balance_keeps_the_commonest_class_from_winning_by_default() -> None:
    # Twice as many "Normal" reports: an unweighted fit leans to Normal on an uninformative text; the
    # balanced fit gives every class the same prior mass.
    texts, vectors, labels = _data()
    model = CaseClassifier.fit(texts, vectors, labels, settings=ClassifierSettings())
    p = np.exp(model.log_probabilities(["unremarkable words"], np.zeros((1, 0))))[0]
    assert p.max() - p.min() < 0.2, p


def test_stored_bytes_reproduce_the_scores_exactly() -> None:
    texts, _, labels = _data()
    vectors = np.random.default_rng(0).normal(size=(len(texts), 8))
    model = CaseClassifier.fit(texts, vectors, labels, settings=ClassifierSettings())
    again = CaseClassifier.from_bytes(model.to_bytes())
    probe = np.random.default_rng(1).normal(size=(2, 8))
    assert np.array_equal(
        model.log_probabilities(["No effusion.", "Left effusion."], probe),
        again.log_probabilities(["No effusion.", "Left effusion."], probe),
    )
    assert again.labels == model.labels and again.chosen_c == model.chosen_c


def test_two_classes_and_refusals() -> None:
    texts = ["pneumothorax"] * 4 + ["no pneumothorax"] * 4
    labels = ["Pneumothorax"] * 4 + ["Normal"] * 4
    model = CaseClassifier.fit(texts, np.zeros((8, 0)), labels, settings=ClassifierSettings())
    assert model.coef.shape[0] == 2
    assert model.labels[int(np.argmax(model.log_probabilities(["no pneumothorax"], np.zeros((1, 0)))))] == "Normal"
    with pytest.raises(ValueError, match="at least two diagnoses"):
        CaseClassifier.fit(texts[:4], np.zeros((4, 0)), labels[:4], settings=ClassifierSettings())
    with pytest.raises(ValueError, match="not a stored case classifier"):
        buffer = __import__("io").BytesIO()
        np.savez(buffer, header=np.frombuffer(b'{"format": "other"}', dtype=np.uint8))
        CaseClassifier.from_bytes(buffer.getvalue())


def test_lexical_features_are_l2_normalised_and_ignore_unknown_ngrams() -> None:
    features = LexicalFeatures.fit(["left effusion", "no effusion"])
    rows = features.transform(["left effusion", "completely unknown words"]).toarray()
    assert np.isclose(np.linalg.norm(rows[0]), 1.0) and not rows[1].any()
