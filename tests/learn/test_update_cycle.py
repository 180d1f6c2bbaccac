"""Update cycles end to end on the tiny Llama: skip, promote, train from the champion with replay, the
frozen set, failures that leave a failed row and no files, and the poisoning guard on real data."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from kbservice.checksums import directory_sha256
from kbservice.db.lease import Lease
from kbservice.errors import KBError
from kbservice.learn import candidate as candidate_module
from kbservice.learn.lease_guard import HeldLease
from kbservice.learn.split import split_new_cases
from kbservice.learn.update import run_update_cycle
from kbservice.services import Services
from tests.conftest import DEMO_CASES, SHARED_DATA
from tests.helpers import cases_jsonl, ingest_case_file


def _new_cases(folder: Path, prefix: str, count: int, labeled_by: str = "dr-b") -> Path:
    records = [
        {
            "id": f"{prefix}-{i}",
            "findings": f"wheeze and night cough for {i + 2} weeks, variable peak flow",
            "diagnosis": "Asthma",
            "labeled_by": labeled_by,
        }
        for i in range(count)
    ]
    return cases_jsonl(folder, f"{prefix}.jsonl", *records)


def test_cycles_skip_promote_and_build_on_the_champion(learn_services: Services, tmp_path: Path) -> None:
    services = learn_services
    assert run_update_cycle(services, triggered_by="test").reason == "the knowledge base is empty"
    ingest_case_file(services, _new_cases(tmp_path, "few", 3))
    skipped = run_update_cycle(services, triggered_by="test")
    assert skipped.status == "skipped" and skipped.adapter_version is None
    assert "3 new labelled case(s)" in skipped.reason and "at least 5" in skipped.reason

    ingest_case_file(services, DEMO_CASES, labeled_by="dr-a")
    first = run_update_cycle(services, triggered_by="test")
    assert first.status == "promoted", first.reason
    assert first.adapter_version == "a1" and {"candidate", "champion"} <= first.metrics.keys()
    assert first.training["tokens"] > 0 and first.training["sequences"] < first.training["examples"]
    shown = services.registry.show("a1")
    all_ids = {c.case_id for c in services.case_store.cases(as_of=2)}
    assert set(shown["train_case_ids"]) | set(shown["heldout_case_ids"]) == all_ids
    assert not set(shown["train_case_ids"]) & set(shown["heldout_case_ids"])
    assert shown["parent"] is None and shown["replay_case_ids"] == [] and shown["knowledge_version"] == 2
    assert shown["artifact_sha256"] == directory_sha256(services.registry.path("a1"))
    assert shown["report"]["gate"]["passed"] and shown["aliases"] == ["champion"]
    assert services.recommendations.latest_calibration(
        base_model_sha256=services.generator.model_sha256, adapter_version="a1", prompt_version="dx-v1", mode="rag"
    )
    assert run_update_cycle(services, triggered_by="test").status == "skipped"  # nothing new since a1

    frozen = sorted(all_ids)[:4]
    services.adapter_store.freeze_cases(frozen, audit=services.audit, actor="test")
    ingest_case_file(services, _new_cases(tmp_path, "more", 6))
    second = run_update_cycle(services, triggered_by="test")
    assert second.adapter_version == "a2" and second.split.frozen == 4
    shown = services.registry.show("a2")
    new_ids = {c.case_id for c in services.case_store.cases(as_of=3) if c.version_added == 3}
    assert shown["parent"] == "a1" and shown["data_watermark"] == 3
    assert set(shown["train_case_ids"]) | set(shown["heldout_case_ids"]) == new_ids
    assert shown["replay_case_ids"] and set(shown["replay_case_ids"]) <= all_ids - set(frozen)
    assert shown["frozen_case_ids"] == frozen
    assert not set(frozen) & set(shown["train_case_ids"] + shown["replay_case_ids"])
    runs = services.adapter_store.runs()
    assert [r["status"] for r in reversed(runs)][:4] == ["skipped", "skipped", "promoted", "skipped"]


def test_split_is_deterministic_stratified_and_stable_as_cases_arrive(learn_services: Services) -> None:
    ingest_case_file(learn_services, DEMO_CASES)
    cases = learn_services.case_store.cases(as_of=1)
    train, held = split_new_cases(cases, fraction=0.34, seed=0)
    assert (train, held) == split_new_cases(list(reversed(cases)), fraction=0.34, seed=0)
    assert {c.diagnosis[0] for c in held} == {c.diagnosis[0] for c in cases}  # every label held out once
    assert split_new_cases(cases, fraction=0.34, seed=1) != (train, held)


def test_a_failing_training_run_leaves_a_failed_row_no_files_and_the_champion(
    learn_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = learn_services
    ingest_case_file(services, DEMO_CASES)

    def crash(*args, out_dir: Path, **kwargs):  # type: ignore[no-untyped-def]
        out_dir.mkdir(parents=True)
        (out_dir / "adapter_model.safetensors").write_bytes(b"half written")
        raise RuntimeError("out of memory")

    monkeypatch.setattr(candidate_module, "train_lora", crash)
    with pytest.raises(KBError, match="failed while building adapter a1: out of memory") as raised:
        run_update_cycle(services, triggered_by="test")
    assert isinstance(raised.value.__cause__, RuntimeError)
    run = services.adapter_store.runs()[0]
    # The failed run keeps the report as far as the cycle got: its split and the candidate it was building.
    assert run["report"]["split"]["train"] > 0 and run["report"]["adapter_version"] == "a1"
    assert run["report"]["status"] == "failed" and "out of memory" in run["reason"]
    row = services.adapter_store.get("a1")
    assert row["status"] == "failed" and "out of memory" in row["error"]
    assert not services.registry.path("a1").exists() and not services.registry.partial_path("a1").exists()
    assert services.registry.champion() is None
    assert services.adapter_store.runs()[0]["status"] == "failed"
    assert "adapter.failed" in [e.kind for e in services.audit.store.entries()]


def test_a_cycle_that_loses_its_lease_stops_and_fails(learn_services: Services) -> None:
    ingest_case_file(learn_services, DEMO_CASES)
    lost = HeldLease(Lease(learn_services.engine, name="learn.update", holder="me", seconds=60))
    lost.lost = True  # as the heartbeat marks it when another process took the lease over
    with pytest.raises(KBError, match="lost the"):
        run_update_cycle(learn_services, triggered_by="test", lease=lost)
    assert learn_services.adapter_store.get("a1")["status"] == "failed"
    assert learn_services.registry.champion() is None


S2D = SHARED_DATA / "symptom2disease" / "symptom2disease.csv"


@pytest.mark.slow
@pytest.mark.skipif(not S2D.exists(), reason="../shared/data/symptom2disease not present")
def test_poisoned_batch_is_rejected_and_its_labeller_named(learn_services: Services, tmp_path: Path) -> None:
    """Trusted cases first; then a clean batch, which the guard lets through; then a batch by two labellers,
    one of whom flipped the labels of 20% of the batch: rejected, and the flipping labeller named."""
    with S2D.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    random.Random(5).shuffle(rows)
    labels = sorted({r["label"] for r in rows})

    def write(name: str, chosen: list[dict], flip: set[int]) -> Path:
        records = [
            {
                "id": f"{name}-{i}",
                "findings": r["text"],
                # a flipped label is another disease's
                "diagnosis": labels[(labels.index(r["label"]) + 7) % len(labels)] if i in flip else r["label"],
                "labeled_by": "dr-trusted" if name == "trusted" else ("dr-good" if i < 50 else "dr-bad"),
            }
            for i, r in enumerate(chosen)
        ]
        return cases_jsonl(tmp_path, f"{name}.jsonl", *records)

    services = learn_services
    services.settings = services.settings.model_copy(
        update={"learn": services.settings.learn.model_copy(update={"replay_cases": 64})}
    )
    ingest_case_file(services, write("trusted", rows[:192], set()))
    assert run_update_cycle(services, triggered_by="test").status == "promoted"

    ingest_case_file(services, write("clean", rows[192:292], set()))
    clean = run_update_cycle(services, triggered_by="test")
    assert clean.labels["checked"] and clean.labels["trusted_cases"] == 64
    assert not [r for r in clean.gate.reasons if "agree" in r], clean.labels

    champion = services.registry.champion()
    ingest_case_file(services, write("poisoned", rows[292:392], set(range(50, 70))))  # 20 of 100, by dr-bad
    poisoned = run_update_cycle(services, triggered_by="test")
    assert poisoned.status == "rejected", poisoned.reason
    assert "'dr-bad'" in poisoned.reason and "'dr-good'" not in poisoned.reason
    assert poisoned.labels["most_harmful_labeller"] == "dr-bad"
    bad = poisoned.labels["labellers"]["dr-bad"]
    assert bad["shortfall"] > services.settings.learn.label_agreement_margin
    assert services.registry.champion() == champion  # never promoted
