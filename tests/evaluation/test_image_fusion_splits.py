"""Repeated fusion splits: a split whose update cycle promotes no encoder is reported and left out, not fatal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kbservice.config import Settings
from kbservice.evaluation import image_fusion_splits

NO_ENCODER = "the update cycle promoted no encoder or trained no adapter"


def _run(seed: int) -> dict[str, Any]:
    truth = ["COVID-19", "No finding", "Other pneumonia", "COVID-19"]
    conditions = {
        c: {"accuracy": 1.0, "macro_f1": 1.0, "weights": {}, "modality": None, "groups": []}
        for c in ("text", "image", "text+image")
    }
    return {
        "seed": seed,
        "split": {"test_images": 4},
        "conditions": conditions,
        "update_cycle": {"encoder_metrics": None, "encoder_pretraining": None},
        "ingest": {"unlabelled_images": []},
        "recommend_latency": {},
        "served_adapter": "a1",
        "test_answers": {"truth": truth, "text": truth, "image": truth, "text+image": truth},
    }


def test_a_failed_split_is_listed_and_the_others_are_summarised(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def fake_benchmark(settings: Settings, folder: Path, *, seed: int, **kwargs: Any) -> dict[str, Any]:
        if seed == 1:
            return {"cycle": {"status": "rejected"}, "error": NO_ENCODER}
        return _run(seed)

    monkeypatch.setattr(image_fusion_splits, "fresh_fusion_benchmark", fake_benchmark)
    summary = image_fusion_splits.repeated_fusion_benchmark(Settings(data_dir=tmp_path), tmp_path, seeds=3)
    assert summary["seeds"] == [0, 2]
    assert summary["failed"] == [{"seed": 1, "error": NO_ENCODER, "cycle_status": "rejected"}]
    assert summary["conditions"]["text+image"]["accuracy_mean"] == 1.0
    assert image_fusion_splits.repeated_fusion_benchmark(Settings(data_dir=tmp_path), tmp_path, seeds=2)["error"]
