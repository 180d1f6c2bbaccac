"""`eval image-fusion --seeds N`: the text / image / text + image comparison over repeated patient-level
splits, each on fresh services, summarised as mean and spread per condition and as paired differences
(fused minus each single modality) with bootstrap intervals (evaluation.paired_bootstrap)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kbservice.config import Settings
from kbservice.evaluation.image_fusion import CONDITIONS, LABELS, fresh_fusion_benchmark
from kbservice.evaluation.paired_bootstrap import (
    SplitDecisions,
    condition_summary,
    paired_differences,
    per_class_recall,
)
from kbservice.progress import NoProgress, Progress

FUSED = "text+image"


def class_indices(answers: list[str]) -> np.ndarray:
    """Class indices of answers (-1: an answer outside the three classes, never right)."""
    return np.asarray([LABELS.index(a) if a in LABELS else -1 for a in answers], dtype=np.int64)


def summarise(splits: list[SplitDecisions]) -> dict[str, Any]:
    """Mean and spread per condition, fused minus each single modality (paired bootstrap), per-class recall."""
    classes = len(LABELS)
    return {
        "conditions": condition_summary(splits, classes),
        "fused_minus": {
            single: paired_differences(splits, condition=FUSED, against=single, classes=classes)
            for single in CONDITIONS
            if single != FUSED
        },
        "per_class_recall": per_class_recall(splits, LABELS),
    }


def repeated_fusion_benchmark(
    settings: Settings,
    folder: Path,
    *,
    seeds: int,
    first_seed: int = 0,
    text: str = "notes",
    test_fraction: float = 0.3,
    latency_requests: int = 20,
    progress: Progress | None = None,
    features_dir: Path | None = None,
    unlabelled: Sequence[str] = (),
) -> dict[str, Any]:
    """Runs `fusion_benchmark` on `seeds` patient-level splits (seeds first_seed, first_seed + 1, ...), each
    on a fresh temporary knowledge base, and summarises them; `recommend` latency is timed on the first. A
    split whose update cycle promotes no encoder (or trains no adapter) is listed under "failed" and left out;
    one whose adapter the gate rejected is scored on the base model, as the service would answer.
    `features_dir`: also write each split's features there (split-SEED.pkl), for offline analysis.
    `unlabelled`: as `fusion_benchmark`'s, stored in every split."""
    progress = progress or NoProgress()
    runs, splits, failed = [], [], []
    started = time.perf_counter()
    for number in range(seeds):
        seed = first_seed + number
        with progress.task(f"Split {number + 1} of {seeds} (seed {seed}, text: {text})", total=1) as advance:
            run = fresh_fusion_benchmark(
                settings,
                folder,
                test_fraction=test_fraction,
                seed=seed,
                text=text,
                latency_requests=latency_requests if number == 0 else 0,
                progress=progress,
                features_out=features_dir / f"split-{seed}.pkl" if features_dir else None,
                unlabelled=unlabelled,
            )
            advance(1)
        if "error" in run:  # one split's update cycle can fail its gate: the others still count
            failed.append({"seed": seed, "error": run["error"], "cycle_status": (run.get("cycle") or {}).get("status")})
            continue
        answers = run.pop("test_answers")
        splits.append(
            SplitDecisions(
                truth=class_indices(answers["truth"]),
                answers={condition: class_indices(answers[condition]) for condition in CONDITIONS},
            )
        )
        runs.append(run)
    if len(splits) < 2:
        return {"text": text, "error": f"{len(splits)} of {seeds} splits could be scored; need 2", "failed": failed}
    return {
        "text": text,
        "unlabelled_images": runs[0]["ingest"]["unlabelled_images"],
        "seeds": [run["seed"] for run in runs],
        "failed": failed,
        "test_fraction": test_fraction,
        **summarise(splits),
        "splits": [
            {
                "seed": run["seed"],
                "split": run["split"],
                "conditions": {
                    condition: {
                        k: run["conditions"][condition][k]
                        for k in ("accuracy", "macro_f1", "modality", "groups", "weights")
                    }
                    for condition in CONDITIONS
                },
                "encoder_metrics": run["update_cycle"]["encoder_metrics"],
                "encoder_pretraining": run["update_cycle"]["encoder_pretraining"],
                "served_adapter": run["served_adapter"],
            }
            for run in runs
        ],
        "recommend_latency": runs[0]["recommend_latency"],  # empty when the first split failed
        "seconds": round(time.perf_counter() - started, 1),
    }
