"""`eval image-fusion`: text alone, image alone and text + image on COVID-19 chest X-rays with clinical notes.

The update cycle trains the encoder and the adapter with its image projector on the training patients;
each condition's fusion is fitted on the cycle's held-out cases and scored on the test patients, and
`recommend` with an image is timed. Runs on fresh services (a temporary data directory).
"""

from __future__ import annotations

import csv
import hashlib
import json
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kbservice.classification import Decision, classification_metrics
from kbservice.evaluation.case_batches import ingest_timed
from kbservice.evaluation.unlabelled_images import unlabelled_case_file
from kbservice.imaging.prepare import request_pixels
from kbservice.learn.cycle_data import case_images
from kbservice.learn.update import run_update_cycle
from kbservice.progress import NoProgress, Progress
from kbservice.recommend.answer import recommend
from kbservice.recommend.calibrate import Example, fit_selected, selection_settings, truth_indices
from kbservice.recommend.request import RecommendationRequest
from kbservice.types import RequestImage

if TYPE_CHECKING:
    from kbservice.config import Settings
    from kbservice.services import Services

# COVID-19 chest X-ray findings grouped into three classes (the rare ones are all other pneumonias).
COVID_CLASSES = {"COVID-19": "COVID-19", "COVID-19, ARDS": "COVID-19", "No Finding": "No finding"}
OTHER_PNEUMONIA = "Other pneumonia"
CONDITIONS = ("text", "image", "text+image")
TEXT_SETTINGS = ("notes", "vitals")
LABELS = ("COVID-19", "No finding", OTHER_PNEUMONIA)


def covid_rows(folder: Path, *, text: str = "notes") -> list[dict[str, Any]]:
    """Labelled rows (not "todo") with their class, findings text and image path. `text`: "notes" (the
    clinical note plus measurements) or "vitals" (measurements and view only, as at triage before a report
    exists; age and sex are kept either way)."""
    if text not in TEXT_SETTINGS:
        raise ValueError(f"text must be one of {', '.join(TEXT_SETTINGS)}, not {text!r}")
    rows = []
    with (folder / "xray_licensed_metadata.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["finding"] == "todo":
                continue
            rows.append(
                {
                    "patient": row["patientid"],
                    "label": COVID_CLASSES.get(row["finding"], OTHER_PNEUMONIA),
                    "finding": row["finding"],
                    "findings": covid_findings(row, with_note=text == "notes"),
                    "age": row["age"] if row["age"].strip().isdigit() else None,
                    "sex": row["sex"] if row["sex"] in ("M", "F") else None,
                    "image": folder / "images256" / row["image_png"],
                }
            )
    return rows


def covid_findings(row: dict[str, str], *, with_note: bool = True) -> str:
    """The clinical note (unless `with_note` is False) plus the measurements recorded with the image (never
    the finding itself)."""
    parts = [row["clinical_notes"].strip() or "No clinical notes."] if with_note else []
    for key, unit in (
        ("temperature", " C"),
        ("pO2_saturation", "%"),
        ("leukocyte_count", ""),
        ("lymphocyte_count", ""),
    ):
        if row.get(key, "").strip():
            parts.append(f"{key.replace('_', ' ')}: {row[key].strip()}{unit}")
    if row.get("view", "").strip():
        parts.append(f"view: {row['view'].strip()}")
    return "; ".join(parts) or "No measurements recorded."


def patient_split(rows: list[dict[str, Any]], *, test_fraction: float, seed: int) -> tuple[list, list]:
    """(train, test) with every patient on one side: patients ordered by a seeded hash, per class of their
    first image, the first `test_fraction` of each class to test."""
    by_class: dict[str, list[str]] = {}
    first_label: dict[str, str] = {}
    for row in rows:
        first_label.setdefault(row["patient"], row["label"])
    for patient, label in first_label.items():
        by_class.setdefault(label, []).append(patient)
    test_patients: set[str] = set()
    for patients in by_class.values():
        ordered = sorted(patients, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
        test_patients |= set(ordered[: round(len(ordered) * test_fraction)])
    return [r for r in rows if r["patient"] not in test_patients], [r for r in rows if r["patient"] in test_patients]


def _request(row: dict[str, Any], pixels: np.ndarray, condition: str) -> RecommendationRequest:
    text = condition in ("text", "text+image")
    return RecommendationRequest(
        findings=row["findings"] if text else "",
        age=row["age"] if text else None,
        sex=row["sex"] if text else None,
        images=(RequestImage.of(pixels),) if condition != "text" else (),
    )


def fusion_benchmark(
    services: Services,
    folder: Path,
    workdir: Path,
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
    text: str = "notes",
    latency_requests: int = 20,
    progress: Progress | None = None,
    features_out: Path | None = None,
    unlabelled: Sequence[str] = (),
) -> dict[str, Any]:
    """Trains encoder and adapter (with its projector) on the train patients through the update cycle, fits
    each condition's fusion weights on the cycle's held-out cases, and scores text, image and both on the
    test patients. `unlabelled`: sources of chest films stored first as unlabelled image cases
    (evaluation.unlabelled_images), which only the encoder's self-supervised pre-training reads."""
    progress = progress or NoProgress()
    rows = covid_rows(folder.resolve(), text=text)  # the case file lives elsewhere: image paths must be absolute
    train, test = patient_split(rows, test_fraction=test_fraction, seed=seed)
    records = [
        {"id": f"x{n}", "findings": r["findings"], "diagnosis": r["label"], "images": [str(r["image"])]}
        | ({"age": r["age"]} if r["age"] else {})
        | ({"sex": r["sex"]} if r["sex"] else {})
        for n, r in enumerate(train)
    ]
    unlabelled_counts: list[dict[str, Any]] = []
    if unlabelled:
        pool, unlabelled_counts = unlabelled_case_file(
            unlabelled,
            covid_folder=folder.resolve(),
            workdir=workdir,
            test_patients={r["patient"] for r in test},
        )
        ingest_timed(services, pool, progress)
    path = workdir / "covid_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    ingest_s, ingested = ingest_timed(services, path, progress)
    started = time.perf_counter()
    cycle = run_update_cycle(services, triggered_by="bench-fusion", progress=progress)
    cycle_s = time.perf_counter() - started
    # Without a promoted encoder there is no image evidence to compare. Without a promoted adapter (its gate
    # rejected the candidate: with vitals-only text that happens) the service answers with the base model,
    # whose prompt has no image tokens but still holds the similar-image cases: every condition is scored on
    # that, and the fusion is fitted on the rejected candidate's held-out cases (no model was trained on them).
    if (cycle.encoder or {}).get("status") != "promoted" or cycle.adapter_version is None:
        return {"cycle": cycle.to_json(), "error": "the update cycle promoted no encoder or trained no adapter"}
    adapter = services.serving_adapter(None)
    version = services.retriever.resolve_version(None)
    heldout_ids = services.adapter_store.get(cycle.adapter_version)["heldout_case_ids"]
    heldout = list(services.case_store.by_case_ids(heldout_ids).values())
    stored_images = case_images(services, heldout)
    recommender = services.recommender
    results: dict[str, Any] = {}
    answers: dict[str, list[str]] = {}  # condition -> each test case's top answer
    saved: dict[str, Any] = {}
    test_pixels = [request_pixels(r["image"], settings=services.settings.imaging) for r in test]
    with progress.task(
        "Scoring held-out and test cases per condition", total=3 * (len(heldout) + len(test))
    ) as advance:
        for condition in CONDITIONS:
            calibration = []
            for case in heldout:
                row = {"findings": case.findings, "age": case.age, "sex": case.sex}
                request = recommender.clean_request(_request(row, stored_images[case.case_id][0].pixels, condition))
                evidence = recommender.evidence(request, exclude_chunk_ids=[case.chunk_id])
                features = recommender.score(evidence, adapter)
                calibration.append(
                    Example(case=case, features=features, truth=truth_indices(features.candidates, case.diagnosis))
                )
                advance(1)
            # Each condition's fusion is fitted as `calibrate` fits the service's: modality and groups chosen
            # out of fold with the configured margins.
            fusion, selection = fit_selected(calibration, **selection_settings(services.settings.recommend))
            saved[condition] = {
                "calibration": [
                    (e.features.candidates, e.features.names, e.features.matrix, e.truth) for e in calibration
                ],
                "test": [],
            }
            decisions = []
            for row, pixels in zip(test, test_pixels, strict=True):
                features = recommender.features(
                    recommender.clean_request(_request(row, pixels, condition)), adapter=adapter
                )
                saved[condition]["test"].append((features.candidates, features.names, features.matrix, row["label"]))
                p = fusion.probabilities(features.matrix, features.names)
                top = int(np.argmax(p))
                decisions.append(
                    Decision(labels=[row["label"]], top=features.candidates[top], probability=float(p[top]))
                )
                advance(1)
            metrics = classification_metrics(decisions)
            results[condition] = {k: metrics[k] for k in ("accuracy", "macro_f1", "ece", "per_class_recall")} | {
                "weights": {k: round(v, 3) for k, v in fusion.weights.items()},
                "modality": selection.modality,
                "groups": selection.groups,
            }
            answers[condition] = [d.top for d in decisions]
    if features_out is not None:  # for offline analysis of the fusion
        import pickle

        features_out.write_bytes(pickle.dumps(saved))
    latency = {}
    for condition in ("image", "text+image") if latency_requests else ():
        times = []
        for row, pixels in list(zip(test, test_pixels, strict=True))[:latency_requests]:
            started = time.perf_counter()
            recommend(services, _request(row, pixels, condition), actor="bench")
            times.append(time.perf_counter() - started)
        latency[condition] = {
            "p50_s": round(statistics.median(times), 3),
            "max_s": round(max(times), 3),
            "n": len(times),
        }
    return {
        "split": {
            "train_images": len(train),
            "train_patients": len({r["patient"] for r in train}),
            "test_images": len(test),
            "test_patients": len({r["patient"] for r in test}),
            "shared_patients": len({r["patient"] for r in train} & {r["patient"] for r in test}),
            "classes_train": dict(Counter(r["label"] for r in train)),
            "classes_test": dict(Counter(r["label"] for r in test)),
            "calibration_cases": len(heldout),
        },
        "conditions": results,
        "ingest": {
            "images": ingested,
            "seconds": round(ingest_s, 1),
            "images_per_s": round(ingested / ingest_s, 1),
            "unlabelled_images": unlabelled_counts,
        },
        "update_cycle": {
            "seconds": round(cycle_s, 1),
            "status": cycle.status,
            "encoder": cycle.encoder.get("status"),
            "encoder_metrics": (cycle.encoder.get("metrics") or {}).get("candidate"),
            # What the self-supervised pre-training read and reached, without its per-epoch history (None: off).
            "encoder_pretraining": {k: v for k, v in (cycle.encoder.get("pretraining") or {}).items() if k != "history"}
            or None,
            "adapter": cycle.adapter_version,
            "adapter_status": cycle.adapter_status,
            "image_fusion": cycle.image_fusion,
            "training": cycle.training,
        },
        "recommend_latency": latency,
        "served_adapter": adapter,  # None: the candidate was rejected and the base model answered
        "test_answers": {"truth": [r["label"] for r in test]} | answers,
        "seed": seed,
        "text": text,
        "knowledge_version": version,
    }


def fresh_fusion_benchmark(settings: Settings, folder: Path, **options: Any) -> dict[str, Any]:
    """`fusion_benchmark` on a fresh temporary knowledge base and work folder, both removed afterwards."""
    from kbservice.services import temporary_services

    with (
        temporary_services(settings) as (services, _),
        tempfile.TemporaryDirectory(prefix="kbservice-fusion-") as work,
    ):
        return fusion_benchmark(services, folder, Path(work), **options)
