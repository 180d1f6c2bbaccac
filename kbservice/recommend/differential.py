"""The differential: candidates ranked by fused probability, each with the sources that support it, and
the rule for abstaining."""

from __future__ import annotations

import numpy as np

from kbservice.recommend.features import Features
from kbservice.recommend.fusion import Fusion
from kbservice.recommend.request import Mode
from kbservice.types import DifferentialEntry

DIFFERENTIAL_SIZE = 5


def decide(
    feats: Features, fusion: Fusion, *, mode: Mode, abstain_below: float
) -> tuple[list[DifferentialEntry], str | None]:
    """The top candidates by fused probability with their supporting sources, and the reason to abstain
    (None: answer): the top probability is below `abstain_below`, or, with retrieval, no source supports
    the top diagnosis."""
    probabilities = fusion.probabilities(feats.matrix, feats.names)
    order = np.argsort(-probabilities, kind="stable")
    differential = [
        DifferentialEntry(
            diagnosis=feats.candidates[i],
            probability=round(float(probabilities[i]), 6),
            citations=[s.id for s in feats.sources if s.supports(feats.candidates[i])],
        )
        for i in order[:DIFFERENTIAL_SIZE]
    ]
    top = differential[0]
    if top.probability < abstain_below:
        return differential, (
            f"the top diagnosis ({top.diagnosis}) has probability {top.probability:.2f}, below the "
            f"abstention threshold {abstain_below:.2f}"
        )
    if mode == "rag" and not top.citations:
        return differential, f"no retrieved guideline passage or case supports the top diagnosis ({top.diagnosis})"
    return differential, None
