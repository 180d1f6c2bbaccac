"""The case classifier: class-balanced multinomial logistic regression over negation-aware n-grams plus the
text's sentence embedding.

Fitted with scikit-learn, applied in numpy from its stored coefficients, so a stored version gives the same
scores in every process and library version (replay depends on it). Class-balanced: every diagnosis weighs
the same in the fit, so the commonest one cannot win by default. The regularisation strength is chosen by
stratified cross-validation on the training cases only (macro-F1), from a small fixed grid.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import sparse

from kbservice.classifier.lexical import LexicalFeatures

C_GRID = (0.5, 2.0, 8.0, 32.0)
FORMAT = "kbservice-case-classifier/1"


class HasCaseText(Protocol):
    findings: str
    history: str | None


def case_text(case: HasCaseText) -> str:
    """The text a case (or a request) is classified and searched by: findings, then history."""
    return (case.findings + (f"\n{case.history}" if case.history else "")).strip()


@dataclass(frozen=True)
class ClassifierSettings:
    """How a classifier is fitted (also recorded with each stored version)."""

    embedding_weight: float = 1.0  # the embedding block's scale beside the L2-normalised n-gram block
    min_df: int = 1
    max_features: int = 200_000
    folds: int = 3  # for choosing C; fewer cases per class than this: C is the grid's middle
    max_iter: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class CaseClassifier:
    labels: list[str]
    lexical: LexicalFeatures
    coef: np.ndarray  # (labels, lexical + embedding dims)
    intercept: np.ndarray  # (labels,)
    embedding_dim: int
    settings: ClassifierSettings
    chosen_c: float

    # ----- scoring ------------------------------------------------------------------------------------

    def design(self, texts: Sequence[str], vectors: np.ndarray) -> sparse.csr_matrix:
        return _design(self.lexical, texts, vectors, self.settings.embedding_weight)

    def log_probabilities(self, texts: Sequence[str], vectors: np.ndarray) -> np.ndarray:
        """(texts x labels) log-probabilities."""
        logits = np.asarray(self.design(texts, vectors) @ self.coef.T) + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    # ----- fitting ------------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls, texts: Sequence[str], vectors: np.ndarray, labels: Sequence[str], *, settings: ClassifierSettings
    ) -> CaseClassifier:
        """Fits on (text, embedding, label) triples; needs at least two distinct labels."""
        names = sorted(set(labels), key=str.casefold)
        if len(names) < 2:
            raise ValueError("a classifier needs cases of at least two diagnoses")
        y = np.array([names.index(label) for label in labels])
        lexical = LexicalFeatures.fit(texts, min_df=settings.min_df, max_features=settings.max_features)
        x = _design(lexical, texts, vectors, settings.embedding_weight)
        chosen = _choose_c(texts, vectors, y, settings)
        coef, intercept = _fit_logistic(x, y, len(names), c=chosen, settings=settings)
        return cls(
            labels=names,
            lexical=lexical,
            coef=coef,
            intercept=intercept,
            embedding_dim=int(vectors.shape[1]),
            settings=settings,
            chosen_c=chosen,
        )

    # ----- storage ------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """An npz archive (no pickles): coefficients, idf, and a JSON header with labels and vocabulary."""
        header = {
            "format": FORMAT,
            "labels": self.labels,
            "vocabulary": sorted(self.lexical.vocabulary, key=self.lexical.vocabulary.__getitem__),
            "embedding_dim": self.embedding_dim,
            "settings": self.settings.__dict__,
            "chosen_c": self.chosen_c,
        }
        buffer = io.BytesIO()
        np.savez(
            buffer,
            header=np.frombuffer(json.dumps(header, ensure_ascii=False).encode(), dtype=np.uint8),
            coef=self.coef,
            intercept=self.intercept,
            idf=self.lexical.idf,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> CaseClassifier:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            header = json.loads(archive["header"].tobytes().decode())
            if header.get("format") != FORMAT:
                raise ValueError(f"not a stored case classifier (format {header.get('format')!r})")
            vocabulary = {term: i for i, term in enumerate(header["vocabulary"])}
            return cls(
                labels=header["labels"],
                lexical=LexicalFeatures(vocabulary=vocabulary, idf=archive["idf"].copy()),
                coef=archive["coef"].copy(),
                intercept=archive["intercept"].copy(),
                embedding_dim=header["embedding_dim"],
                settings=ClassifierSettings(**header["settings"]),
                chosen_c=header["chosen_c"],
            )


def _design(lexical: LexicalFeatures, texts: Sequence[str], vectors: np.ndarray, weight: float) -> sparse.csr_matrix:
    blocks = [lexical.transform(texts)]
    if vectors.shape[1]:
        blocks.append(sparse.csr_matrix(np.asarray(vectors, dtype=float) * weight))
    return sparse.hstack(blocks, format="csr")


def _fit_logistic(
    x: sparse.csr_matrix, y: np.ndarray, classes: int, *, c: float, settings: ClassifierSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial, class-balanced logistic regression; (classes x features) coefficients and intercepts
    (a two-class fit is expanded to two rows with the same softmax)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, class_weight="balanced", max_iter=settings.max_iter, random_state=settings.seed)
    model.fit(x, y)
    coef, intercept = np.asarray(model.coef_, dtype=float), np.asarray(model.intercept_, dtype=float)
    if classes == 2 and coef.shape[0] == 1:
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return coef, intercept


def _choose_c(texts: Sequence[str], vectors: np.ndarray, y: np.ndarray, settings: ClassifierSettings) -> float:
    """The grid's C with the best mean macro-F1 over stratified folds of the training cases (each fold's
    vocabulary fitted without it); the grid's middle when some class has fewer cases than folds."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    if np.bincount(y).min() < settings.folds:
        return C_GRID[len(C_GRID) // 2]
    folds = StratifiedKFold(n_splits=settings.folds, shuffle=True, random_state=settings.seed)
    scores = {c: [] for c in C_GRID}
    for train, test in folds.split(np.zeros(len(y)), y):
        train_texts, test_texts = [texts[i] for i in train], [texts[i] for i in test]
        lexical = LexicalFeatures.fit(train_texts, min_df=settings.min_df, max_features=settings.max_features)
        x_train = _design(lexical, train_texts, vectors[train], settings.embedding_weight)
        x_test = _design(lexical, test_texts, vectors[test], settings.embedding_weight)
        classes = int(y.max()) + 1
        for c in C_GRID:
            coef, intercept = _fit_logistic(x_train, y[train], classes, c=c, settings=settings)
            predicted = np.argmax(np.asarray(x_test @ coef.T) + intercept, axis=1)
            scores[c].append(f1_score(y[test], predicted, average="macro", labels=np.unique(y), zero_division=0))
    return max(C_GRID, key=lambda c: (float(np.mean(scores[c])), -c))
