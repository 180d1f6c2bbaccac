"""Per-candidate features: similar-case evidence from both rankers, and the language model's scores.

Similar cases vote for their labels. Each ranker contributes two signals per label: a reciprocal-rank vote
(how many close cases carry it) and the best score any of its cases reached (how close the closest is),
plus a sharpened copy of the latter so a near-duplicate case can dominate. Fusion weights decide how much
each signal counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kbservice.types import CaseRecord

CASE_FEATURES = (
    "dense_vote",
    "dense_best",
    "dense_best_sharp",
    "lexical_vote",
    "lexical_best",
    "lexical_best_sharp",
)
# Similar cases by image (the image index of the champion encoder): the same three signals as a ranker.
IMAGE_FEATURES = ("image_vote", "image_best", "image_best_sharp")
LLM_FEATURES = ("llm_mean_logprob", "llm_total_logprob")
EVIDENCE_FEATURES = (*CASE_FEATURES, *IMAGE_FEATURES)

# Uncalibrated starting weights, used only until `kbservice calibrate` has fitted real ones.
DEFAULT_WEIGHTS = {name: 1.0 for name in EVIDENCE_FEATURES} | {"llm_mean_logprob": 1.0, "llm_total_logprob": 0.0}


def candidate_key(label: str) -> str:
    return label.casefold()


def case_features(
    candidates: Sequence[str],
    *,
    dense: Sequence[tuple[int, float]],
    lexical: Sequence[tuple[int, float]],
    cases_by_chunk: dict[int, CaseRecord],
) -> np.ndarray:
    """A (candidates x CASE_FEATURES) matrix from the two best-first (chunk id, score) case rankings."""
    index = {candidate_key(label): row for row, label in enumerate(candidates)}
    features = np.zeros((len(candidates), len(CASE_FEATURES)))
    top_lexical = lexical[0][1] if lexical and lexical[0][1] > 0 else 1.0
    for column, ranking, scale in ((0, dense, 1.0), (3, lexical, top_lexical)):
        for rank, (chunk_id, score) in enumerate(ranking, start=1):
            case = cases_by_chunk.get(chunk_id)
            if case is None:
                continue
            similarity = max(score / scale, 0.0)
            for label in case.diagnosis:
                row = index.get(candidate_key(label))
                if row is None:
                    continue
                features[row, column] += 1.0 / rank
                features[row, column + 1] = max(features[row, column + 1], similarity)
    features[:, 2] = features[:, 1] ** 8
    features[:, 5] = features[:, 4] ** 2
    return features


def llm_features(mean_logprobs: Sequence[float], total_logprobs: Sequence[float]) -> np.ndarray:
    """A (candidates x LLM_FEATURES) matrix, each column shifted so its best candidate is 0 (softmax is
    shift-invariant per column, and this keeps the numbers readable in stored features)."""
    matrix = np.column_stack([np.asarray(mean_logprobs, dtype=float), np.asarray(total_logprobs, dtype=float)])
    return matrix - matrix.max(axis=0, keepdims=True)


def image_features(
    candidates: Sequence[str], *, hits: Sequence[tuple[int, float]], cases: dict[int, CaseRecord]
) -> np.ndarray:
    """A (candidates x IMAGE_FEATURES) matrix from best-first (case id, cosine) similar-image hits."""
    index = {candidate_key(label): row for row, label in enumerate(candidates)}
    features = np.zeros((len(candidates), len(IMAGE_FEATURES)))
    for rank, (case_id, score) in enumerate(hits, start=1):
        case = cases.get(case_id)
        if case is None:
            continue
        for label in case.diagnosis:
            row = index.get(candidate_key(label))
            if row is not None:
                features[row, 0] += 1.0 / rank
                features[row, 1] = max(features[row, 1], max(score, 0.0))
    features[:, 2] = features[:, 1] ** 8
    return features
