"""`bench images`: the image encoder the update cycle trains, on PneumoniaMNIST as given.

The train split is ingested as image-only cases, the validation split as the frozen evaluation set; the
update cycle's encoder stage trains, gates and promotes the encoder, which then classifies the untouched
test split. Also image ingest throughput. Runs on fresh services (a temporary data directory).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kbservice.classification import probability_metrics
from kbservice.evaluation.case_batches import ingest_timed
from kbservice.imaging.prepare import write_png
from kbservice.imaging.readers import model_input
from kbservice.learn.update import run_update_cycle
from kbservice.progress import NoProgress, Progress

if TYPE_CHECKING:
    from kbservice.services import Services

PNEUMONIA_LABELS = ("Normal chest radiograph", "Pneumonia")


def pneumonia_benchmark(
    services: Services, npz: Path, workdir: Path, *, progress: Progress | None = None
) -> dict[str, Any]:
    """Ingests the train split as image-only cases and the validation split as the frozen evaluation set,
    runs the update cycle's encoder stage, and scores the promoted encoder on the untouched test split."""
    progress = progress or NoProgress()
    data = np.load(npz)
    files: dict[str, Path] = {}
    for split in ("train", "val"):
        rows = []
        for n, (pixels, label) in enumerate(zip(data[f"{split}_images"], data[f"{split}_labels"][:, 0], strict=True)):
            name = f"{split}/{n}.png"
            write_png(pixels, workdir / name)
            rows.append({"id": f"{split}-{n}", "diagnosis": PNEUMONIA_LABELS[int(label)], "images": [name]})
        files[split] = workdir / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_s, train_count = ingest_timed(services, files["train"], progress)
    val_s, val_count = ingest_timed(services, files["val"], progress)
    frozen = [c.case_id for c in services.case_store.cases(as_of=2) if c.version_added == 2]
    services.adapter_store.freeze_cases(frozen, audit=services.audit, actor="bench")
    started = time.perf_counter()
    cycle = run_update_cycle(services, triggered_by="bench-images", progress=progress, stages=("encoder",))
    cycle_s = time.perf_counter() - started
    stage = cycle.encoder or {}
    if stage.get("status") != "promoted":
        return {"cycle": cycle.to_json(), "error": "the encoder was not promoted"}
    encoder = services.encoders.load(stage["version"])
    size = services.settings.imaging.size
    test = [model_input(p.astype(np.float32) / 255.0, size) for p in data["test_images"]]
    started = time.perf_counter()
    probabilities = encoder.class_probabilities(test)  # type: ignore[attr-defined]
    encode_s = time.perf_counter() - started
    order = [encoder.labels.index(label) for label in PNEUMONIA_LABELS]  # type: ignore[attr-defined]
    metrics = probability_metrics([int(y) for y in data["test_labels"][:, 0]], probabilities[:, order])
    return {
        "test": {k: metrics[k] for k in ("cases", "accuracy", "macro_f1", "auc")},
        "gate": stage["metrics"]["candidate"],
        "encoder_version": stage["version"],
        "training": stage["training"] | {"train_s": stage["train_s"]},
        "update_cycle_s": round(cycle_s, 1),
        "ingest": {
            "train_images": train_count,
            "train_images_per_s": round(train_count / train_s, 1),
            "val_images": val_count,
            "val_images_per_s": round(val_count / val_s, 1),
        },
        "test_images_per_s_classified": round(len(test) / encode_s, 1),
    }
