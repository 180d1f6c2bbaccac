"""The learning loop through the real CLI entry point: update, adapters, report and eval continual."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.runner import Cli
from tests.cli.snapshots import check_json_keys
from tests.conftest import DEMO_CASES, DEMO_GUIDELINES
from tests.helpers import WIDE_GATE_ENV, cases_jsonl


@pytest.fixture
def run(run_with_model: Cli) -> Cli:
    return run_with_model


@pytest.fixture(autouse=True)
def small_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Updates on 5 new cases, through a wide-open gate: these tests are about the commands around a
    promotion, so every candidate is promoted (see tests/helpers.WIDE_GATE)."""
    monkeypatch.setenv("KB_LEARN__MIN_NEW_CASES", "5")
    monkeypatch.setenv("KB_LEARN__REPLAY_CASES", "8")
    for name, value in WIDE_GATE_ENV.items():
        monkeypatch.setenv(name, value)


def _more_cases(folder: Path) -> Path:
    records = [
        {
            "id": f"new-{i}",
            "findings": f"fever, productive cough and crackles for {i + 1} days",
            "diagnosis": "Pneumonia",
        }
        for i in range(6)
    ]
    return cases_jsonl(folder, "more.jsonl", *records)


def test_update_adapters_recommend_and_report(run: Cli, tmp_path: Path) -> None:
    run("ingest", "guidelines", str(DEMO_GUIDELINES))
    run("ingest", "cases", str(DEMO_CASES), "--labeled-by", "dr-a")
    first = run.json("update", "run-once")
    assert {"run_id", "status", "adapter_version", "reason", "metrics"} <= first.keys()
    assert first["status"] == "promoted" and first["adapter_version"] == "a1"
    assert {"candidate", "champion"} <= first["metrics"].keys()
    check_json_keys("update run-once promoted", first)
    skipped = run.json("update", "run-once")
    assert skipped["status"] == "skipped" and skipped["adapter_version"] is None
    assert skipped["metrics"] == {"candidate": None, "champion": None}
    check_json_keys("update run-once skipped", skipped)

    listed = run.json("adapters", "list")
    assert len(listed) == 1
    assert {"version", "status", "aliases", "parent", "created_at", "metrics"} <= listed[0].keys()
    assert listed[0]["aliases"] == ["champion"]
    check_json_keys("adapters list", listed)
    shown = run.json("adapters", "show", "a1")
    keys = {"train_case_ids", "heldout_case_ids", "replay_case_ids", "knowledge_version", "base_model_sha256"}
    assert keys | {"artifact_sha256", "hyperparameters"} <= shown.keys()
    assert len(shown["train_case_ids"]) + len(shown["heldout_case_ids"]) == 24 and shown["knowledge_version"] == 2
    check_json_keys("adapters show", shown)

    _, err = run("adapters", "freeze", "--case-id", str(shown["train_case_ids"][0]), expect=1)
    assert "were trained on by an adapter" in err
    out, _ = run("adapters", "freeze", "--count", "3")  # drawn from a1's held-out cases only
    assert "the frozen evaluation set holds 3" in out
    run("ingest", "cases", str(_more_cases(tmp_path)))
    second = run.json("update", "run-once")
    assert second["adapter_version"] == "a2" and second["status"] == "promoted", second["reason"]
    frozen = run.json("adapters", "show", "a2")["frozen_case_ids"]
    assert len(frozen) == 3 and set(frozen) <= set(shown["heldout_case_ids"])
    diff = run.json("adapters", "diff", "a1", "a2")
    assert diff["lineage"] == {"a1": None, "a2": "a1"} and "macro_f1" in diff["metrics"]
    assert diff["data"]["train_case_ids"]["shared"] == 0
    check_json_keys("adapters diff", diff)

    answer = run.json("recommend", "--findings", "night wheeze", "--no-treatment")
    assert answer["provenance"]["adapter_version"] == "a2"
    base = run.json("recommend", "--findings", "night wheeze", "--no-treatment", "--adapter", "none")
    assert base["provenance"]["adapter_version"] is None
    _, err = run("recommend", "--findings", "wheeze", "--adapter", "a9", expect=1)
    assert "adapter version 'a9' does not exist" in err
    out, _ = run("adapters", "rollback", "--reason", "clinician feedback")
    assert "from a2 to a1" in out
    assert run.json("adapters", "list")[0]["aliases"] == ["champion"]
    out, _ = run("adapters", "promote", "a2", "--reason", "reviewed")
    assert "champion is now a2" in out
    _, err = run("adapters", "promote", "a9", expect=1)
    assert "adapter version 'a9' does not exist" in err

    out, _ = run("report", "--out", str(tmp_path / "report"))
    page = (tmp_path / "report" / "index.html").read_text()
    assert "a1" in page and "Update runs" in page
    for chart in ("adapter_metrics.png", "data_growth.png", "knowledge_versions.png"):
        assert (tmp_path / "report" / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kinds = [e["kind"] for e in run.json("audit", "list")]
    assert "adapter.promoted" in kinds and "adapter.promote" in kinds and "eval_set.add" in kinds
    assert run.json("audit", "verify")["ok"] is True


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_eval_continual_reports_each_batch(run: Cli, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in DEMO_CASES.read_text().splitlines()]
    train = cases_jsonl(tmp_path, "train.jsonl", *[r for i, r in enumerate(rows) if i % 3])
    test = cases_jsonl(tmp_path, "test.jsonl", *[r for i, r in enumerate(rows) if not i % 3])
    result = run.json(
        "eval", "continual", "--cases", str(train), "--test", str(test), "--batches", "2", "--freeze-per-batch", "2"
    )
    assert [b["batch"] for b in result["batches"]] == [1, 2]
    assert result["batches"][0]["test_cases"] < result["batches"][1]["test_cases"] == 8
    assert [b["update"]["status"] for b in result["batches"]] == ["promoted", "promoted"]
    for b in result["batches"]:
        assert {"accuracy", "macro_f1", "ece", "per_class_recall"} <= b["base_rag"].keys() & b["champion_rag"].keys()
        # The baselines saw the same training cases so far and answered the same test cases.
        assert set(b["baselines"]) == {"majority", "tfidf_logreg", "embedding_logreg", "knn_vote"}
        assert set(b["baselines"]["knn_vote"]["per_class_recall"]) == set(b["champion_rag"]["per_class_recall"])
    assert isinstance(result["backward_transfer"], float) and "joint" in result
    check_json_keys("eval continual", result)
    _, err = run("eval", "continual", "--cases", str(train), "--test", str(test), "--batches", "99", expect=1)
    assert "between 1 and the number of diseases" in err


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_training_and_swap_benchmarks(run: Cli) -> None:
    training = run.json("bench", "training", "--cases", str(DEMO_CASES), "--count", "24")
    cycle, bare = training["update_cycle"], training["bare_peft_loop"]
    assert cycle["training_tokens_per_s"] > 0 and bare["tokens_per_s"] > 0 and training["ratio"] > 0
    assert cycle["tokens"] == bare["tokens"]  # the same examples, packed vs one by one
    assert cycle["peak_rss_mb"] > 0 and cycle["cycle_s"] >= cycle["training_s"]
    check_json_keys("bench training", training)

    swap = run.json("bench", "swap", "--cases", str(DEMO_CASES), "--count", "24", "--seconds", "1.5")
    assert swap["failed_requests"] == 0 and swap["requests"] > 4
    assert swap["promoted"] == "a1" and swap["first_request_started_ms"] is not None
    assert swap["old_adapter_requests_after_promotion"] == 0
    assert swap["watcher_ready_ms"] is not None and swap["adapter_load_ms"] is not None
    check_json_keys("bench swap", swap)
