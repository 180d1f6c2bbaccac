"""The fusion replay's `--drop`: a dropped group's features are zeroed in the held-out and the test cases
alike, so what that group adds is measured on the same splits with everything else fixed."""

from __future__ import annotations

import numpy as np

from kbservice.evaluation.image_fusion import CONDITIONS, LABELS
from kbservice.recommend import evidence
from tests.bench.fusion_replay import replay_split

NAMES = [*evidence.EVIDENCE_FEATURES, *evidence.LLM_FEATURES, *evidence.LLM_TEXT_FEATURES]


def _rows(n: int, seed: int) -> list[tuple[list[str], list[str], np.ndarray, int]]:
    """Cases whose image head alone knows the diagnosis (every other column is noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        truth = i % len(LABELS)
        matrix = rng.normal(scale=0.1, size=(len(LABELS), len(NAMES)))
        matrix[:, NAMES.index("image_head_logprob")] = np.where(np.arange(len(LABELS)) == truth, 0.0, -3.0)
        rows.append((list(LABELS), NAMES, matrix, truth))
    return rows


def test_dropping_the_only_informative_group_loses_what_it_knew() -> None:
    calibration, test = _rows(60, seed=0), _rows(30, seed=1)
    saved = {
        condition: {
            "calibration": [(c, n, m, [t]) for c, n, m, t in calibration],
            "test": [(c, n, m, LABELS[t]) for c, n, m, t in test],
        }
        for condition in CONDITIONS
    }
    truth = np.array([t for *_, t in test])
    kept, _ = replay_split(saved, group_margin=None, modality_margin=None)
    dropped, _ = replay_split(saved, group_margin=None, modality_margin=None, drop=("image_classifier",))
    np.testing.assert_array_equal(kept.truth, truth)
    assert (kept.answers["image"] == truth).all()
    assert (dropped.answers["image"] == truth).mean() < 0.6  # noise alone: about a third right
