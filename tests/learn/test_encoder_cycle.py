"""The update cycle's encoder stage: trains, judges, promotes and indexes; versions roll back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kbservice.errors import ConflictError
from kbservice.learn.encoder_cycle import gate_verdict
from kbservice.learn.split import split_new_cases
from kbservice.learn.update import run_update_cycle
from kbservice.recommend.answer import recommend
from kbservice.recommend.request import RecommendationRequest
from kbservice.services import Services
from kbservice.types import RequestImage
from tests.helpers import WIDE_IMAGE_GATE, case_record, cases_jsonl, ingest_case_file
from tests.imaging.cases import LABELS, ingest_image_cases
from tests.imaging.images import two_class_images, write_dicom, write_png


def test_encoder_is_trained_judged_promoted_and_indexed(imaging_services: Services, tmp_path: Path) -> None:
    services = imaging_services
    assert services.encoders.champion() is None
    ingest_image_cases(services, tmp_path, 60)
    report = run_update_cycle(services, triggered_by="test", stages=("encoder",))
    stage = report.encoder
    assert report.status == "promoted" and stage["status"] == "promoted" and stage["version"] == "e1"
    assert stage["metrics"]["candidate"]["accuracy"] >= 0.8 and stage["metrics"]["champion"] is None
    assert stage["training"]["epochs_run"] == 20 and services.encoder_store.alias("champion") == "e1"
    row = services.encoders.list()[0]
    assert row["aliases"] == ["champion"] and row["labels"] == sorted(LABELS) and row["kind"] == "cnn"
    assert (services.settings.index_dir / "images" / "e1.faiss").exists()

    # Similar images come back with their cases; the same class dominates the neighbours.
    probes, labels = two_class_images(6, seed=99)
    for pixels, label in zip(probes, labels, strict=True):
        version, hits = services.image_similarity.similar([pixels], k=5, as_of=1)
        assert version == "e1" and len(hits) == 5 and hits[0].score >= hits[-1].score
        cases = services.case_store.by_case_ids([h.case_id for h in hits])
        same = sum(cases[h.case_id].diagnosis == [LABELS[label]] for h in hits)
        assert same >= 3

    # Nothing new: skipped. New cases: a second candidate, judged against e1 on the same kind of cases.
    assert run_update_cycle(services, triggered_by="test", stages=("encoder",)).status == "skipped"
    ingest_image_cases(services, tmp_path, 30, prefix="j", seed=1)
    # Judged against e1 (its metrics are in the report); the gate's margins are opened so that e2's verdict
    # does not hang on a few noisy held-out images: this test is about what a promotion moves.
    services.settings.imaging = services.settings.imaging.model_copy(update=WIDE_IMAGE_GATE)
    second = run_update_cycle(services, triggered_by="test", stages=("encoder",)).encoder
    assert second["version"] == "e2" and second["metrics"]["champion"] is not None
    assert second["status"] == "promoted", second["gate"]
    assert services.encoder_store.aliases() == {"champion": "e2", "previous": "e1"}
    old, new = services.encoder_store.rollback(audit=services.audit, actor="test", reason="check")
    assert (old, new) == ("e2", "e1") and services.encoders.champion_version() == "e1"
    kinds = [e.kind for e in services.audit.store.latest(kinds=["encoder.promoted", "encoder.promote"], limit=10)]
    assert "encoder.promoted" in kinds and "encoder.promote" in kinds


def test_new_images_join_the_index_and_retracted_cases_leave_the_answers(
    imaging_services: Services, tmp_path: Path
) -> None:
    services = imaging_services
    ingest_image_cases(services, tmp_path, 40)
    run_update_cycle(services, triggered_by="test", stages=("encoder",))
    probe = services.image_store.pixels([1])[1]
    _, hits = services.image_similarity.similar([probe], k=1, as_of=1)
    assert hits[0].image_id == 1 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    ingest_image_cases(services, tmp_path, 4, prefix="late", seed=5)  # version 2
    _, late = services.image_similarity.similar([services.image_store.pixels([41])[41]], k=1, as_of=2)
    assert late[0].image_id == 41  # embedded on first use, no rebuild needed
    case = services.case_store.by_case_ids([1])[1]
    services.store.retract_document(case.document_id, author="test", reason="withdrawn")
    _, after = services.image_similarity.similar([probe], k=3, as_of=3)
    assert 1 not in [h.image_id for h in after]
    _, before = services.image_similarity.similar([probe], k=3, as_of=2)
    assert before[0].image_id == 1  # the past version still sees it


def test_an_encoder_that_does_not_beat_the_commonest_class_is_rejected(
    imaging_services: Services, tmp_path: Path
) -> None:
    services = imaging_services
    # Every image is the same picture, half labelled each way: no encoder can tell them apart.
    same = np.full((16, 16), 90, dtype=np.uint8)
    write_png(tmp_path / "same.png", same)
    records = [{"id": f"s{n}", "diagnosis": LABELS[n % 2], "images": ["same.png"]} for n in range(40)]
    ingest_case_file(services, cases_jsonl(tmp_path, "same.jsonl", *records))
    stage = run_update_cycle(services, triggered_by="test", stages=("encoder",)).encoder
    assert stage["status"] == "rejected" and "commonest class" in stage["gate"]["reasons"][0]
    assert services.encoder_store.alias("champion") is None
    with pytest.raises(ConflictError, match="only versions that passed the gate"):
        services.encoder_store.promote("e1", audit=services.audit, actor="test", reason="force")


def test_the_gate_compares_with_the_champion_within_margins() -> None:
    class Margins:
        encoder_f1_margin = 0.02
        encoder_accuracy_margin = 0.02

    cases = [case_record(n, LABELS[n % 2]) for n in range(4)]
    champion = {"accuracy": 0.9, "macro_f1": 0.9}
    assert gate_verdict({"accuracy": 0.89, "macro_f1": 0.885}, champion, None, cases, Margins()) == ([], [])
    reasons, _ = gate_verdict({"accuracy": 0.85, "macro_f1": 0.85}, champion, None, cases, Margins())
    assert len(reasons) == 2 and "macro-F1 fell" in reasons[0] and "accuracy fell" in reasons[1]
    # One diagnosis among the held-out cases: the same fall is not judged, and the report says why.
    one_class = [case_record(n, LABELS[0]) for n in range(4)]
    reasons, not_judged = gate_verdict({"accuracy": 0.5, "macro_f1": 0.5}, champion, None, one_class, Margins())
    assert reasons == [] and "all have the diagnosis 'Upper opacity'" in not_judged[0]


def test_held_out_cases_of_one_diagnosis_do_not_reject_the_first_encoder(
    imaging_services: Services, tmp_path: Path
) -> None:
    # The defect report: 60 image cases of one diagnosis (the first 60 PneumoniaMNIST training images are
    # all pneumonia) and one DICOM case of the other. The held-out slice was 12 cases of one class, where
    # "always answering the commonest class" scores macro-F1 1.0, so every first encoder was rejected
    # ("no better than ... (1.0000)"), its AUC was NaN in the JSON, and image-only requests were refused.
    services = imaging_services
    images, labels = two_class_images(120, seed=3)
    upper = [image for image, label in zip(images, labels, strict=True) if label == 0][:60]
    records = []
    for n, image in enumerate(upper):
        write_png(tmp_path / f"u{n}.png", image)
        records.append({"id": f"u{n}", "findings": "chest radiograph", "diagnosis": LABELS[0], "images": [f"u{n}.png"]})
    lower = next(image for image, label in zip(images, labels, strict=True) if label == 1)
    write_dicom(tmp_path / "lower.dcm", lower.astype(np.uint16))
    records.append({"id": "d1", "findings": "chest radiograph", "diagnosis": LABELS[1], "images": ["lower.dcm"]})
    ingest_case_file(services, cases_jsonl(tmp_path, "cases.jsonl", *records))

    stage = run_update_cycle(services, triggered_by="test", stages=("encoder",)).encoder
    assert stage["gate"]["cases"] == 12 and stage["gate"]["reasons"] == []
    assert stage["status"] == "promoted" and services.encoder_store.alias("champion") == "e1"
    assert any("all have the diagnosis 'Upper opacity'" in line for line in stage["gate"]["not_judged"])
    assert stage["metrics"]["candidate"]["auc"] is None  # undefined on one class, and JSON has no NaN
    assert any(line.startswith("AUC is undefined") for line in stage["gate"]["not_judged"])
    json.dumps(stage, allow_nan=False)
    assert stage["metrics"]["baseline"]["answers"] == LABELS[0]
    image = RequestImage.of(upper[0])
    answer = recommend(services, RecommendationRequest(findings="", images=(image,)), actor="test").to_json()
    assert answer["images"]["used"] and answer["provenance"]["encoder_version"] == "e1"


def test_every_diagnosis_with_two_or_more_new_cases_is_held_out() -> None:
    cases = [case_record(n, "common") for n in range(40)] + [case_record(100 + n, "rare") for n in range(2)]
    cases.append(case_record(200, "single"))
    train, held = split_new_cases(cases, fraction=0.2, seed=0)
    assert sorted(c.diagnosis[0] for c in held).count("common") == 8
    assert {c.diagnosis[0] for c in held} == {"common", "rare"}  # one of two rare cases; the single one trains
    assert [c.case_id for c in train if c.diagnosis[0] != "common"] == sorted(
        {100, 101, 200} - {c.case_id for c in held}
    )


def test_request_images_round_trip_for_replay() -> None:
    images, _ = two_class_images(1)
    image = RequestImage.of(images[0])
    again = RequestImage.from_json(image.to_json())
    assert again.sha256 == image.sha256 and (again.pixels == image.pixels).all()


def test_a_serving_process_keeps_the_old_encoder_until_the_new_index_is_built(
    imaging_services: Services, tmp_path: Path
) -> None:
    from kbservice.imaging.similarity import ImageSimilarity

    services = imaging_services
    services.settings.imaging.encoder_f1_margin = 1.0  # any candidate passes: this test is about the switch
    services.settings.imaging.encoder_accuracy_margin = 1.0
    ingest_image_cases(services, tmp_path, 40)
    run_update_cycle(services, triggered_by="test", stages=("encoder",))
    # Another serving process: its own index directory, the same database.
    serving = ImageSimilarity(registry=services.encoders, images=services.image_store, index_dir=tmp_path / "other")
    probe = services.image_store.pixels([1])[1]
    assert serving.similar([probe], k=1, as_of=1)[0] == "e1"  # nothing to fall back on: built now
    ingest_image_cases(services, tmp_path, 20, prefix="k", seed=3)
    assert run_update_cycle(services, triggered_by="test", stages=("encoder",)).encoder["status"] == "promoted"
    version, hits = serving.similar([probe], k=1, as_of=2)
    assert version == "e1" and hits  # the previous encoder answers while e2's index builds
    serving._building.join(timeout=60)  # type: ignore[union-attr]
    assert serving.similar([probe], k=1, as_of=2)[0] == "e2"
    assert (tmp_path / "other" / "images" / "e2.faiss").exists()
