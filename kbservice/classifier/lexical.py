"""Negation-aware word n-grams weighted by TF-IDF: "no effusion" and "effusion" are different features.

Fitted and applied by this module alone (no scikit-learn vectoriser), so a stored classifier's features are
a plain vocabulary and idf vector that reproduce exactly, whatever library version is installed.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from kbservice.negation import marked_tokens


def ngrams(text: str) -> list[str]:
    """Uni- and bigrams of the negation-marked words ("no neg_effusion", "neg_effusion")."""
    words = marked_tokens(text)
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


@dataclass(frozen=True)
class LexicalFeatures:
    vocabulary: dict[str, int]
    idf: np.ndarray  # float64, one per vocabulary entry

    @classmethod
    def fit(cls, texts: Sequence[str], *, min_df: int = 1, max_features: int = 200_000) -> LexicalFeatures:
        """The vocabulary (n-grams in at least `min_df` texts, the `max_features` most frequent) and its
        smoothed idf, log((1 + n) / (1 + df)) + 1."""
        df: Counter[str] = Counter()
        for text in texts:
            df.update(set(ngrams(text)))
        kept = sorted((t for t, c in df.items() if c >= min_df), key=lambda t: (-df[t], t))[:max_features]
        kept.sort()
        n = len(texts)
        idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in kept])
        return cls(vocabulary={t: i for i, t in enumerate(kept)}, idf=idf)

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """Rows of sublinear tf x idf, L2-normalised (unknown n-grams are dropped)."""
        rows, cols, values = [], [], []
        for row, text in enumerate(texts):
            counts = Counter(t for t in ngrams(text) if t in self.vocabulary)
            if not counts:
                continue
            index = np.array([self.vocabulary[t] for t in counts])
            weights = (1.0 + np.log(np.array(list(counts.values()), dtype=float))) * self.idf[index]
            weights /= np.linalg.norm(weights)
            rows += [row] * len(index)
            cols += index.tolist()
            values += weights.tolist()
        return sparse.csr_matrix((values, (rows, cols)), shape=(len(texts), len(self.vocabulary)))
