"""The repeated-split summary of `eval image-fusion --seeds N --features-out DIR`, replayed from the captured
features: every condition's fusion fitted again on its held-out cases (as the eval fits it) and scored on
the test cases. With the settings the run had, it reproduces the run's own figures; with others it shows
what a fusion rule would have done on the same splits in seconds instead of an hour.

    python -m tests.bench.fusion_replay DIR [--modality-margin 0.0 | --modality-margin none]
                                            [--modality-holder lower | text | "text and image"]
                                            [--group-margin none] [--drop GROUP ...]
`--drop image_classifier` (an evidence group of recommend.group_selection) scores the same splits as if that
group's features had never been computed: what the group itself adds, with everything else held fixed.
Prints one JSON object: per-condition mean and spread, fused minus each single modality with paired
bootstrap 95% intervals, per-class recall, and each split's chosen modality.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from kbservice.evaluation.image_fusion import CONDITIONS
from kbservice.evaluation.image_fusion_splits import FUSED, class_indices, summarise
from kbservice.evaluation.paired_bootstrap import SplitDecisions
from kbservice.recommend import evidence, group_selection


def _margin(text: str) -> float | None:
    return None if text == "none" else float(text)


def replay_split(
    saved: dict[str, Any],
    *,
    group_margin: float | None,
    modality_margin: float | None,
    modality_holder: str = group_selection.LOWER,
    drop: tuple[str, ...] = (),
) -> tuple[SplitDecisions, str | None]:
    """One split's test decisions per condition and the modality its fused condition chose, with the
    features of the `drop` groups zeroed (a constant column is no evidence)."""
    answers, truth, modality = {}, [], None
    for condition in CONDITIONS:
        calibration = saved[condition]["calibration"]
        names = calibration[0][1]
        dropped = [names.index(n) for group in drop for n in group_selection.FEATURE_GROUPS[group] if n in names]

        def without(matrix: np.ndarray, dropped: list[int] = dropped) -> np.ndarray:
            kept = matrix.copy()
            kept[:, dropped] = 0.0
            return kept

        examples = [
            group_selection.Example(
                without(matrix), truth_indices, evidence.candidate_key(candidates[truth_indices[0]])
            )
            for candidates, _, matrix, truth_indices in calibration
            if truth_indices
        ]
        fusion, selection = group_selection.fit_selected(
            examples, names, margin=group_margin, modality_margin=modality_margin, modality_holder=modality_holder
        )
        if condition == FUSED:
            modality = selection.modality
        tests = saved[condition]["test"]
        answers[condition] = class_indices(
            [candidates[int(np.argmax(fusion.probabilities(without(matrix), n)))] for candidates, n, matrix, _ in tests]
        )
        truth = [label for *_, label in tests]
    return SplitDecisions(truth=class_indices(truth), answers=answers), modality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features", type=Path, help="the --features-out folder (split-SEED.pkl files)")
    parser.add_argument("--modality-margin", default="0.0", help="recommend.fusion_modality_margin; none: off")
    parser.add_argument("--group-margin", default="none", help="recommend.fusion_group_margin; none: off")
    parser.add_argument(
        "--modality-holder",
        default=group_selection.LOWER,
        choices=group_selection.HOLDERS,
        help="recommend.fusion_modality_holder",
    )
    parser.add_argument(
        "--drop", action="append", default=[], choices=sorted(group_selection.FEATURE_GROUPS), help="leave a group out"
    )
    args = parser.parse_args()
    paths = sorted(args.features.glob("split-*.pkl"), key=lambda p: int(p.stem.split("-")[1]))
    if not paths:
        raise SystemExit(f"no split-*.pkl files in {args.features}")
    splits, chosen = [], {}
    for path in paths:
        split, modality = replay_split(
            pickle.loads(path.read_bytes()),
            group_margin=_margin(args.group_margin),
            modality_margin=_margin(args.modality_margin),
            modality_holder=args.modality_holder,
            drop=tuple(args.drop),
        )
        splits.append(split)
        chosen[path.stem] = modality
    print(json.dumps(summarise(splits) | {"modality": chosen}))


if __name__ == "__main__":
    main()
