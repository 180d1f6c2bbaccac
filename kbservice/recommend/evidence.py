"""Per-candidate features: similar-case evidence from both rankers, what the request's text says about each
candidate (affirmed, negated or hedged), the case classifier's log-probabilities, and the language model's
scores.

Similar cases vote for their labels. Each ranker contributes two signals per label: a reciprocal-rank vote
(how many close cases carry it) and the best score any of its cases reached (how close the closest is),
plus a sharpened copy of the latter so a near-duplicate case can dominate. Text similarity does not
understand negation ("no pneumothorax" is close to "pneumothorax"), so a case does not vote for a label the
request negates, and a case that asserts what the request negates (or negates what it asserts) votes with
less weight. Fusion weights decide how much each signal counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kbservice.classifier.model import case_text
from kbservice.negation import Mentions, mentions
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
# The share of the candidate's name that the request's text affirms, negates and hedges.
MENTION_FEATURES = ("mention_affirmed", "mention_negated", "mention_uncertain")
# The case classifier: its log-probability of the candidate (shifted so the best known candidate is 0; a
# candidate it never saw gets its least likely known candidate's value) and whether it never saw it.
CLASSIFIER_FEATURES = ("classifier_logprob", "classifier_unseen")
# The image encoder's own class head on the request's images (mean probability over its images), the same two
# columns as the case classifier. Similar-image votes read the encoder only through its nearest labelled
# neighbours; the head reads everything it learned. 0 for a request without images, and unless
# `imaging.head_evidence` is on (see there for why it is off by default).
IMAGE_HEAD_FEATURES = ("image_head_logprob", "image_head_unseen")
LLM_FEATURES = ("llm_mean_logprob", "llm_total_logprob")
# The same scores from the request's text alone (no image tokens, no similar-image cases in the prompt): for a
# request with images, what the model says without them, so the fusion can weigh the two apart (0 for a request
# with images only: there is no text); for a request without images, a copy of LLM_FEATURES.
LLM_TEXT_FEATURES = ("llm_text_mean_logprob", "llm_text_total_logprob")
MODEL_FEATURES = (*LLM_FEATURES, *LLM_TEXT_FEATURES)
# Evidence that comes from the stored cases by retrieval alone (no learned model): the poisoning guard and
# the "similar cases only" ablation use these.
SIMILAR_CASE_FEATURES = (*CASE_FEATURES, *IMAGE_FEATURES, *MENTION_FEATURES)
EVIDENCE_FEATURES = (*SIMILAR_CASE_FEATURES, *CLASSIFIER_FEATURES, *IMAGE_HEAD_FEATURES)

# Which way each feature's evidence points: +1 supports its candidate (more similar cases, a higher log-
# probability), -1 counts against it (the text negates it), 0 either way (a hedge, an indicator). Fitting
# keeps every weight on that side: on 300 DDXPlus held-out cases an unconstrained fit gave lexical votes a
# weight of -1.35 (three collinear columns), which then outvoted exact-duplicate cases on test patients.
FEATURE_SIGNS: dict[str, int] = (
    {name: 1 for name in (*CASE_FEATURES, *IMAGE_FEATURES, *MODEL_FEATURES)}
    | {"mention_affirmed": 1, "mention_negated": -1, "mention_uncertain": 0}
    | {"classifier_logprob": 1, "classifier_unseen": 0}
    | {"image_head_logprob": 1, "image_head_unseen": 0}
)

# Uncalibrated starting weights, used only until `kbservice calibrate` has fitted real ones.
DEFAULT_WEIGHTS = (
    {name: 1.0 for name in (*CASE_FEATURES, *IMAGE_FEATURES)}
    | {name: 0.0 for name in MENTION_FEATURES}
    | {"classifier_logprob": 1.0, "classifier_unseen": 0.0}
    | {"image_head_logprob": 1.0, "image_head_unseen": 0.0}
    | {"llm_mean_logprob": 1.0, "llm_total_logprob": 0.0}
    | {name: 0.0 for name in LLM_TEXT_FEATURES}
)
# Words too common in clinical text to count as a contradiction between a request and a similar case.
_CONFLICT_MIN_LENGTH = 4
_HEAD_FLOOR = 1e-6


def candidate_key(label: str) -> str:
    return label.casefold()


def case_features(
    candidates: Sequence[str],
    *,
    dense: Sequence[tuple[int, float]],
    lexical: Sequence[tuple[int, float]],
    cases_by_chunk: dict[int, CaseRecord],
    query: Mentions | None = None,
) -> np.ndarray:
    """A (candidates x CASE_FEATURES) matrix from the two best-first (chunk id, score) case rankings.
    `query`: what the request's text affirms and negates (None: no negation handling)."""
    index = {candidate_key(label): row for row, label in enumerate(candidates)}
    features = np.zeros((len(candidates), len(CASE_FEATURES)))
    top_lexical = lexical[0][1] if lexical and lexical[0][1] > 0 else 1.0
    negated_labels = {candidate_key(c) for c in candidates if _negated_only(query, c)} if query is not None else set()
    for column, ranking, scale in ((0, dense, 1.0), (3, lexical, top_lexical)):
        for rank, (chunk_id, score) in enumerate(ranking, start=1):
            case = cases_by_chunk.get(chunk_id)
            if case is None:
                continue
            agreement = 1.0 if query is None else 1.0 / (1.0 + contradictions(query, mentions(case_text(case))))
            similarity = max(score / scale, 0.0) * agreement
            for label in case.diagnosis:
                row = index.get(candidate_key(label))
                if row is None or candidate_key(label) in negated_labels:
                    continue
                features[row, column] += agreement / rank
                features[row, column + 1] = max(features[row, column + 1], similarity)
    features[:, 2] = features[:, 1] ** 8
    features[:, 5] = features[:, 4] ** 2
    return features


def contradictions(query: Mentions, case: Mentions) -> int:
    """How many findings one text asserts that the other negates (content words only)."""
    clash = (query.negated & case.affirmed) | (query.affirmed & case.negated)
    return sum(1 for word in clash if len(word) >= _CONFLICT_MIN_LENGTH)


def _negated_only(query: Mentions, candidate: str) -> bool:
    affirmed, negated, _ = query.mention(candidate)
    return negated >= 0.5 and affirmed < negated


def mention_features(candidates: Sequence[str], query: Mentions) -> np.ndarray:
    """A (candidates x MENTION_FEATURES) matrix: how much of each candidate's name the text affirms,
    negates and hedges."""
    return np.array([query.mention(c) for c in candidates], dtype=float).reshape(len(candidates), 3)


def classifier_features(candidates: Sequence[str], labels: Sequence[str], log_probabilities: np.ndarray) -> np.ndarray:
    """A (candidates x CLASSIFIER_FEATURES) matrix from the classifier's log-probabilities over its `labels`
    (also the layout of IMAGE_HEAD_FEATURES: a log-probability shifted so the best is 0, and "never seen")."""
    if not len(labels):
        return np.zeros((len(candidates), len(CLASSIFIER_FEATURES)))
    known = {candidate_key(label): float(lp) for label, lp in zip(labels, log_probabilities, strict=True)}
    best, worst = max(known.values()), min(known.values())
    out = np.zeros((len(candidates), len(CLASSIFIER_FEATURES)))
    for row, candidate in enumerate(candidates):
        value = known.get(candidate_key(candidate))
        out[row] = (worst - best, 1.0) if value is None else (value - best, 0.0)
    return out


def image_head_features(candidates: Sequence[str], head: Sequence[Sequence]) -> np.ndarray:
    """A (candidates x IMAGE_HEAD_FEATURES) matrix from the encoder head's [label, probability] rows (none: a
    request without images, or an encoder without a head: zeros)."""
    labels = [str(label) for label, _ in head]
    # A probability the head rounds to 0 would make an infinite log: floor it where the softmax stops meaning much.
    log_probabilities = np.log(np.clip(np.array([float(p) for _, p in head]), _HEAD_FLOOR, 1.0))
    return classifier_features(candidates, labels, log_probabilities)


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
