"""Evidence fusion and calibration: a conditional-logit over per-candidate features.

P(candidate) = softmax(w . features(candidate)) over the candidate set. With a single feature (the language
model's log-likelihood) this is exactly temperature scaling (w = 1/T); with several it also learns how much
to trust similar-case evidence against the model. Weights are fitted by maximum likelihood on held-out
labelled cases, so the probabilities are calibrated on data the retrieval did not see. Each held-out case
is weighted so that every diagnosis counts the same (class-balanced likelihood): otherwise a knowledge base
where most cases are "normal" learns to trust whatever evidence says "normal".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
        # Only the weighted columns enter the product: BLAS sums in lanes that depend on the columns' positions,
        # so columns of weight 0 could move the last bit, and a fusion that leaves a modality out would then
        # not give exactly the answer of the requests without it.
        used = np.flatnonzero(w)
        return softmax(features[:, used] @ w[used])


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class _Stacked:
    """Examples padded to one array, so a fit's every iteration is a few array operations instead of a Python
    loop over examples (choosing a modality fits about a hundred fusions per calibration, group selection more)."""

    features: np.ndarray  # examples x candidates x features, zero past an example's own candidates
    valid: np.ndarray  # examples x candidates: a real candidate, not padding
    truth: np.ndarray  # examples x candidates: one of the example's true labels
    weights: np.ndarray  # per example, divided by the number of examples

    @classmethod
    def of(cls, features: Sequence[np.ndarray], truths: Sequence[list[int]], weights: np.ndarray) -> _Stacked:
        width = max(len(x) for x in features)
        stacked = np.zeros((len(features), width, features[0].shape[1]))
        valid = np.zeros((len(features), width), dtype=bool)
        truth = np.zeros_like(valid)
        for i, (x, labels) in enumerate(zip(features, truths, strict=True)):
            stacked[i, : len(x)] = x
            valid[i, : len(x)] = True
            truth[i, labels] = True
        return cls(stacked, valid, truth, weights / len(features))

    def log_probabilities(self, w: np.ndarray) -> np.ndarray:
        """Each example's log-softmax over its candidates (-inf on padding)."""
        scores = np.where(self.valid, self.features @ w, -np.inf)
        shifted = scores - scores.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def on_truth(self, log_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`log_p` on each example's true labels, shifted so the largest is 0 (-inf elsewhere: the mass on the
        truth may underflow), and the shift."""
        masked = np.where(self.truth, log_p, -np.inf)
        top = masked.max(axis=1, keepdims=True)
        return masked - top, top[:, 0]

    def objective(self, w: np.ndarray, log_p: np.ndarray, l2: float) -> float:
        """The weighted negative log of each example's probability mass on its true labels, plus the penalty;
        `log_p` is `log_probabilities(w)`, which the fit computes once per point."""
        shifted, top = self.on_truth(log_p)
        mass = top + np.log(np.exp(shifted).sum(axis=1))
        return l2 * float(w @ w) - float(self.weights @ mass)


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
    signs: Mapping[str, int] | None = None,
    iterations: int = 100,
) -> Fusion:
    """Maximum-(weighted-)likelihood weights: each example is (candidates x features, indices of its true
    labels), optionally weighted (see `balanced_weights`), with an L2 penalty `l2` shrinking them toward 0.
    `signs` (feature name -> +1, -1 or 0) keeps each weight on the side its evidence points to: a feature
    that supports its candidate (+1) may be discounted to 0 but never count against it; 0 or absent: free.

    The likelihood of an example is the probability mass on its true labels; examples whose labels are not
    among the candidates carry no information and are skipped. Projected Newton's method (weights at a bound
    that the gradient pushes past stay there; the others take the Newton step) with a backtracking line
    search, in log space: a handful of parameters, and a near-duplicate case can push probabilities to 0.
    """
    given = np.ones(len(features)) if example_weights is None else np.asarray(example_weights, dtype=float)
    kept = [(x, list(t), g) for x, t, g in zip(features, truths, given, strict=True) if len(t)]
    if not kept:
        raise ValueError("no example has a true label among its candidates")
    data = _Stacked.of([x for x, _, _ in kept], [t for _, t, _ in kept], np.array([g for _, _, g in kept]))
    dims = len(names)
    sign = np.array([(signs or {}).get(name, 0) for name in names])
    lower, upper = np.where(sign > 0, 0.0, -np.inf), np.where(sign < 0, 0.0, np.inf)
    w = np.zeros(dims)  # feasible for every sign
    log_p = data.log_probabilities(w)
    loss = data.objective(w, log_p, l2)
    for _ in range(iterations):
        p = np.exp(log_p)
        q = np.exp(data.on_truth(log_p)[0])
        q /= q.sum(axis=1, keepdims=True)  # posterior over the true labels
        mean_p = np.einsum("nc,ncd->nd", p, data.features)
        mean_q = np.einsum("nc,ncd->nd", q, data.features)
        grad = 2 * l2 * w - data.weights @ (mean_q - mean_p)
        spread = np.einsum("n,nc,ncd,nce->de", data.weights, p - q, data.features, data.features, optimize=True)
        means = np.einsum("n,nd,ne->de", data.weights, mean_p, mean_p) - np.einsum(
            "n,nd,ne->de", data.weights, mean_q, mean_q
        )
        hess = 2 * l2 * np.eye(dims) + spread - means
        # Weights held at their bound by a gradient pushing past it do not move this iteration.
        held = ((w <= lower) & (grad > 0)) | ((w >= upper) & (grad < 0))
        free = np.flatnonzero(~held)
        if not len(free):
            break
        step = np.zeros(dims)
        try:
            step[free] = np.linalg.solve(hess[np.ix_(free, free)] + 1e-9 * np.eye(len(free)), grad[free])
        except np.linalg.LinAlgError:
            step[free] = grad[free]
        if grad @ step <= 0:  # not a descent direction (the multi-label term can break convexity)
            step[free] = grad[free]
        scale = 1.0
        while scale > 1e-6:
            candidate = np.clip(w - scale * step, lower, upper)
            candidate_log_p = data.log_probabilities(candidate)
            candidate_loss = data.objective(candidate, candidate_log_p, l2)
            if candidate_loss <= loss - 1e-4 * float(grad @ (w - candidate)):
                break
            scale /= 2
        else:
            break
        converged = loss - candidate_loss < 1e-9
        w, log_p, loss = candidate, candidate_log_p, candidate_loss
        if converged:
            break
    return Fusion(weights={name: float(value) for name, value in zip(names, w, strict=True)})
