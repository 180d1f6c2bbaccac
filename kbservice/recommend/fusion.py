"""Evidence fusion and calibration: a conditional-logit over per-candidate features.

P(candidate) = softmax(w . features(candidate)) over the candidate set. With a single feature (the language
model's log-likelihood) this is exactly temperature scaling (w = 1/T); with several it also learns how much
to trust similar-case evidence against the model. Weights are fitted by maximum likelihood on held-out
labelled cases, so the probabilities are calibrated on data the retrieval did not see. Each held-out case
is weighted so that every diagnosis counts the same (class-balanced likelihood): otherwise a knowledge base
where most cases are "normal" learns to trust whatever evidence says "normal".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_L2 = 1e-3  # keeps the fit finite when a feature separates the held-out cases perfectly


@dataclass(frozen=True)
class Fusion:
    """Named feature weights; unknown or missing features count as 0."""

    weights: dict[str, float]

    def probabilities(self, features: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Softmax over candidates (rows of `features`, columns named by `names`)."""
        w = np.array([self.weights.get(name, 0.0) for name in names])
        return softmax(features @ w)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max()
    return shifted - np.log(np.exp(shifted).sum())


def _objective(
    w: np.ndarray, features: Sequence[np.ndarray], truths: Sequence[list[int]], weights: np.ndarray, l2: float
) -> float:
    total = l2 * float(w @ w)
    for x, truth, weight in zip(features, truths, weights, strict=True):
        log_p = _log_softmax(x @ w)[truth]
        total -= weight * float(log_p.max() + np.log(np.exp(log_p - log_p.max()).sum())) / len(features)
    return total


def balanced_weights(classes: Sequence[str]) -> np.ndarray:
    """Per-example weights that give every class the same total weight (mean 1): with them the commonest
    diagnosis cannot win the likelihood by default."""
    counts: dict[str, int] = {}
    for name in classes:
        counts[name] = counts.get(name, 0) + 1
    return np.array([len(classes) / (len(counts) * counts[name]) for name in classes])


def fit_fusion(
    features: Sequence[np.ndarray],
    truths: Sequence[Sequence[int]],
    names: Sequence[str],
    *,
    example_weights: Sequence[float] | None = None,
    l2: float = DEFAULT_L2,
    iterations: int = 100,
) -> Fusion:
    """Maximum-(weighted-)likelihood weights: each example is (candidates x features, indices of its true
    labels), optionally weighted (see `balanced_weights`), with an L2 penalty `l2` shrinking them toward 0.

    The likelihood of an example is the probability mass on its true labels; examples whose labels are not
    among the candidates carry no information and are skipped. Newton's method with a backtracking line
    search, in log space: a handful of parameters, and a near-duplicate case can push probabilities to 0.
    """
    given = np.ones(len(features)) if example_weights is None else np.asarray(example_weights, dtype=float)
    kept = [(x, list(t), g) for x, t, g in zip(features, truths, given, strict=True) if len(t)]
    if not kept:
        raise ValueError("no example has a true label among its candidates")
    xs, ts = [x for x, _, _ in kept], [t for _, t, _ in kept]
    gs = np.array([g for _, _, g in kept])
    dims, n = len(names), len(kept)
    w = np.zeros(dims)
    loss = _objective(w, xs, ts, gs, l2)
    for _ in range(iterations):
        grad = 2 * l2 * w
        hess = 2 * l2 * np.eye(dims)
        for x, truth, g in zip(xs, ts, gs, strict=True):
            log_p = _log_softmax(x @ w)
            p = np.exp(log_p)
            q = np.zeros_like(p)
            q[truth] = np.exp(log_p[truth] - log_p[truth].max())
            q /= q.sum()  # posterior over the true labels
            mean_p, mean_q = p @ x, q @ x
            grad -= g * (mean_q - mean_p) / n
            hess += g * ((x * p[:, None]).T @ x - np.outer(mean_p, mean_p)) / n
            hess -= g * ((x * q[:, None]).T @ x - np.outer(mean_q, mean_q)) / n
        try:
            step = np.linalg.solve(hess + 1e-9 * np.eye(dims), grad)
        except np.linalg.LinAlgError:
            step = grad
        if grad @ step <= 0:  # not a descent direction (the multi-label term can break convexity)
            step = grad
        scale = 1.0
        while scale > 1e-6:
            candidate = w - scale * step
            candidate_loss = _objective(candidate, xs, ts, gs, l2)
            if candidate_loss <= loss - 1e-4 * scale * float(grad @ step):
                break
            scale /= 2
        else:
            break
        converged = loss - candidate_loss < 1e-9
        w, loss = candidate, candidate_loss
        if converged:
            break
    return Fusion(weights={name: float(value) for name, value in zip(names, w, strict=True)})
