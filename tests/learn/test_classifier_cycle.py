"""The update cycle's classifier stage on the tiny Llama: it never trains on held-out or frozen cases, a
promoted classifier enters the fusion through its calibration, recommendations record it, replay
reproduces its scores exactly, and reports that differ only by negation score differently."""

from __future__ import annotations

import random
from pathlib import Path

from kbservice.learn.classifier_cycle import never_train_on
from kbservice.learn.cycle_data import plan_adapter_data, read_new_cases
from kbservice.learn.update import run_update_cycle
from kbservice.recommend.answer import calibration_for, recommend, replay
from kbservice.recommend.request import RecommendationRequest
from kbservice.services import Services
from tests.helpers import cases_jsonl, ingest_case_file
from tests.learn.conftest import learn_services_for

SIDES = ("right", "left", "bilateral", "apical", "basal")
SIZES = ("small", "moderate", "large", "tiny")
NORMAL = (
    "No pneumothorax or pleural effusion.",
    "No pneumothorax. No pleural effusion.",
    "No effusion or pneumothorax.",
)


def _reports(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        kind = ("Normal", "Normal", "Pneumothorax", "Pleural effusion")[i % 4]
        side, size = rng.choice(SIDES), rng.choice(SIZES)
        findings = {
            "Normal": rng.choice(NORMAL) + rng.choice([" Lungs clear.", " Heart size normal.", ""]),
            "Pneumothorax": f"{size.capitalize()} {side} pneumothorax. No pleural effusion.",
            "Pleural effusion": f"{size.capitalize()} {side} pleural effusion. No pneumothorax.",
        }[kind]
        records.append({"id": f"r{seed}-{i}", "findings": findings, "diagnosis": kind, "labeled_by": "dr-a"})
    return records


def test_classifier_stage_trains_on_train_cases_only_and_serves_through_its_calibration(
    tmp_path: Path, tiny_lm_dir: Path
) -> None:
    services = learn_services_for(tmp_path / "data", None, tiny_lm_dir, f1_margin=1.0, class_margin=1.0, ece_margin=1.0)
    try:
        _run(services, tmp_path)
    finally:
        services.close()


def _run(services: Services, tmp_path: Path) -> None:
    ingest_case_file(services, cases_jsonl(tmp_path, "first.jsonl", *_reports(24, seed=1)))
    frozen = sorted(c.case_id for c in services.case_store.cases(as_of=1))[:4]
    services.adapter_store.freeze_cases(frozen, audit=services.audit, actor="test")
    ingest_case_file(services, cases_jsonl(tmp_path, "second.jsonl", *_reports(40, seed=2)))
    data = read_new_cases(services, version=2)
    plan = plan_adapter_data(data, settings=services.settings.learn)

    report = run_update_cycle(services, triggered_by="test", stages=("classifier",))
    stage = report.classifier
    assert stage is not None and stage["status"] == "promoted", report.reason
    assert report.status == "promoted" and "classifier c1 promoted" in report.reason
    row = services.classifier_store.get("c1")
    trained = set(row["train_case_ids"])
    # Never trained on the frozen set or the cycle's held-out cases; judged on exactly those.
    assert not trained & set(frozen)
    assert not trained & {c.case_id for c in plan.heldout}
    assert not trained & never_train_on(services, plan, data) - trained
    assert set(row["heldout_case_ids"]) == {c.case_id for c in plan.gate_cases}  # no earlier stage judged any
    assert trained == {c.case_id for c in data.labelled} - set(frozen) - {c.case_id for c in plan.heldout}
    assert row["artifact_sha256"] and services.classifiers.champion_version() == "c1"
    assert "classifier_only_accuracy" in stage["metrics"]["candidate"]

    calibration = calibration_for(services, mode="rag")
    assert calibration.classifier is not None and calibration.classifier.version == "c1"
    assert calibration.fusion.weights["classifier_logprob"] != 0.0

    # Later cycles never train a classifier on a case an earlier one was judged on.
    ingest_case_file(services, cases_jsonl(tmp_path, "third.jsonl", *_reports(24, seed=3)))
    again = run_update_cycle(services, triggered_by="test", stages=("classifier",))
    assert again.classifier["status"] in ("promoted", "rejected")
    second = services.classifier_store.get(again.classifier["version"])
    assert not set(second["train_case_ids"]) & (set(row["heldout_case_ids"]) | set(frozen))

    served = services.serving_classifier(services.classifiers.champion_version())
    # A pair that differs only by one negation.
    asserted = RecommendationRequest(findings="Large right pneumothorax. No pleural effusion.")
    negated = RecommendationRequest(findings="No large right pneumothorax. No pleural effusion.")
    recommender = services.recommender
    for_asserted = recommender.features(recommender.clean_request(asserted), classifier=served.model)
    for_negated = recommender.features(recommender.clean_request(negated), classifier=served.model)
    column = for_asserted.names.index("classifier_logprob")
    row_of = for_asserted.candidates.index("Pneumothorax")
    assert for_asserted.matrix[row_of, column] > for_negated.matrix[row_of, column]

    answer = recommend(services, asserted, actor="test", with_treatment=False)
    assert answer.provenance.classifier_version == served.version
    replayed = replay(services, answer.id, actor="test")
    assert replayed.identical, replayed.differences
