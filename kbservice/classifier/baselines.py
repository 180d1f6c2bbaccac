"""The simple reference classifiers every diagnosis evaluation fits and scores beside kbservice, on exactly
its split: if kbservice cannot beat these, the report says so.

- always the commonest training diagnosis;
- TF-IDF over plain word uni- and bigrams + class-balanced logistic regression (the classic text baseline);
- the configured embedder's sentence vectors + class-balanced logistic regression;
- k-nearest-neighbour vote over the same vectors (what similar-case retrieval alone would say).

Each returns (test cases x labels) probabilities over `labels`, the labels of the training cases.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

BASELINES = ("majority", "tfidf_logreg", "embedding_logreg", "knn_vote")
KNN_K = 10


@dataclass(frozen=True)
class TrainTest:
    """Texts, sentence vectors and (primary) labels of the training and the test cases."""

    train_texts: Sequence[str]
    train_vectors: np.ndarray
    train_labels: Sequence[str]
    test_texts: Sequence[str]
    test_vectors: np.ndarray

    @property
    def labels(self) -> list[str]:
        return sorted(set(self.train_labels), key=str.casefold)

    def y(self) -> np.ndarray:
        labels = self.labels
        return np.array([labels.index(label) for label in self.train_labels])


def majority(data: TrainTest) -> np.ndarray:
    counts = Counter(data.train_labels)
    top = min(counts, key=lambda label: (-counts[label], label.casefold()))
    out = np.zeros((len(data.test_texts), len(data.labels)))
    out[:, data.labels.index(top)] = 1.0
    return out


def tfidf_logreg(data: TrainTest) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectoriser = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x = vectoriser.fit_transform(data.train_texts)
    model = LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000).fit(x, data.y())
    return _full(model.predict_proba(vectoriser.transform(data.test_texts)), model.classes_, len(data.labels))


def embedding_logreg(data: TrainTest) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000).fit(data.train_vectors, data.y())
    return _full(model.predict_proba(data.test_vectors), model.classes_, len(data.labels))


def knn_vote(data: TrainTest) -> np.ndarray:
    """Each test case's `KNN_K` most similar training cases (cosine) vote for their labels, weighted by
    similarity; the probabilities are the vote shares."""
    similarity = np.asarray(data.test_vectors) @ np.asarray(data.train_vectors).T
    k = min(KNN_K, similarity.shape[1])
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    y = data.y()
    out = np.zeros((len(data.test_texts), len(data.labels)))
    for row, neighbours in enumerate(nearest):
        for j in neighbours:
            out[row, y[j]] += max(float(similarity[row, j]), 0.0)
    totals = out.sum(axis=1, keepdims=True)
    return np.divide(out, totals, out=np.full_like(out, 1.0 / out.shape[1]), where=totals > 0)


def _full(probabilities: np.ndarray, classes: np.ndarray, count: int) -> np.ndarray:
    out = np.zeros((probabilities.shape[0], count))
    out[:, classes] = probabilities
    return out


FITTERS: dict[str, Callable[[TrainTest], np.ndarray]] = {
    "majority": majority,
    "tfidf_logreg": tfidf_logreg,
    "embedding_logreg": embedding_logreg,
    "knn_vote": knn_vote,
}
