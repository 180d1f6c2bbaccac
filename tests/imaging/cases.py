"""Image cases for tests: fast imaging settings, services built with them, and two-class image case files."""

from __future__ import annotations

from pathlib import Path

from kbservice.config import ImagingSettings, LearnSettings, LLMSettings
from kbservice.services import Services, build_services, initialise
from tests.conftest import make_settings
from tests.helpers import cases_jsonl, ingest_case_file
from tests.imaging.images import two_class_images, write_png

LABELS = ("Upper opacity", "Lower opacity")
# Small and quick: 16 x 16 images, a few epochs; the two classes are easy to tell apart.
FAST_IMAGING = {"size": 16, "cnn_width": 8, "cnn_embedding_dim": 16, "cnn_epochs": 20, "min_new_image_cases": 10}


def imaging_services_for(data_dir: Path, database_url: str | None, tiny_lm_dir: Path, **imaging) -> Services:  # type: ignore[no-untyped-def]
    settings = make_settings(
        data_dir,
        database_url,
        llm=LLMSettings(model_path=tiny_lm_dir),
        learn=LearnSettings(min_new_cases=5, replay_cases=4),
        imaging=ImagingSettings(**(FAST_IMAGING | imaging)),
    )
    initialise(settings)
    return build_services(settings)


def ingest_image_cases(
    services: Services,
    folder: Path,
    count: int,
    *,
    prefix: str = "i",
    seed: int = 0,
    with_findings: bool = True,
    labelled: bool = True,
) -> list[int]:
    """`count` two-class image cases (PNG files next to a JSONL); returns their labels (0 or 1), which
    `labelled=False` leaves out of the stored cases (unlabelled image cases)."""
    images, labels = two_class_images(count, seed=seed)
    records = []
    for n, (image, label) in enumerate(zip(images, labels, strict=True)):
        write_png(folder / "img" / f"{prefix}{n}.png", image)
        record = {"id": f"{prefix}{n}", "images": [f"img/{prefix}{n}.png"]}
        if labelled:
            record["diagnosis"] = LABELS[label]
        if with_findings:
            record["findings"] = "Cough and fever." if n % 3 else "Shortness of breath."
        records.append(record)
    ingest_case_file(services, cases_jsonl(folder, f"{prefix}.jsonl", *records))
    return labels
