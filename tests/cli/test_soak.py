"""`bench soak` end to end on a small scale: it serves the data directory with two workers, mixes search,
recommend, ingest and one update cycle, and reports per-route latency per window and per-worker memory."""

from __future__ import annotations

import pytest

from tests.cli.runner import Cli
from tests.cli.snapshots import check_json_keys
from tests.conftest import DEMO_CASES, DEMO_GUIDELINES
from tests.helpers import WIDE_GATE_ENV


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_short_soak_runs_every_route_without_errors(run_with_model: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_with_model
    for name, value in {**WIDE_GATE_ENV, "KB_LEARN__MIN_NEW_CASES": "5", "KB_LEARN__REPLAY_CASES": "8"}.items():
        monkeypatch.setenv(name, value)
    _, err = run("bench", "soak", "--minutes", "0.5", expect=1)
    assert "knowledge base is empty" in err
    run("ingest", "guidelines", str(DEMO_GUIDELINES))
    run("ingest", "cases", str(DEMO_CASES), "--labeled-by", "dr-a")
    report = run.json(
        "bench", "soak", "--minutes", "0.5", "--workers", "2", "--clients", "3", "--window-s", "10",
        "--warmup-minutes", "0.1", "--update-at-minutes", "0.05",
    )  # fmt: skip
    check_json_keys("bench soak", report)
    assert report["errors"] == 0, report["error_kinds"]
    assert {"search", "recommend", "ingest", "update", "job"} <= set(report["routes"])
    assert report["update"]["job"] == "succeeded" and report["update"]["cycle"] == "promoted"
    assert len(report["windows"]) >= 3
    assert len(report["worker_memory"]) == 2  # one entry per worker process
    assert all(worker["rss_mb_end"] > 50 for worker in report["worker_memory"])
    keys = run.json("keys", "list")
    assert all(key["revoked_at"] for key in keys if key["name"].startswith("soak-"))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_traffic_only_soak_on_postgresql(run_with_model: Cli) -> None:
    """The same traffic against PostgreSQL (the update cycle there is covered by the scheduler tests)."""
    run = run_with_model
    run("ingest", "guidelines", str(DEMO_GUIDELINES))
    run("ingest", "cases", str(DEMO_CASES), "--labeled-by", "dr-a")
    report = run.json(
        "bench", "soak", "--minutes", "0.5", "--workers", "2", "--clients", "3", "--window-s", "10",
        "--warmup-minutes", "0.1", "--no-update",
    )  # fmt: skip
    assert report["errors"] == 0, report["error_kinds"]
    assert {"search", "recommend", "ingest"} <= set(report["routes"]) and "update" not in report["routes"]
    assert report["update"] == {} and len(report["worker_memory"]) == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_update_cycle_outside_the_run_is_refused_before_anything_starts(run: Cli) -> None:
    """It used to wait for the cycle's start time long after the traffic had stopped (a hang)."""
    _, err = run("bench", "soak", "--minutes", "0.5", "--update-at-minutes", "1", expect=1)
    assert "--update-at-minutes 1 must fall inside the run (--minutes 0.5)" in err
    _, err = run("bench", "soak", "--minutes", "1", "--update-at-minutes", "0.2", "--no-update", expect=1)
    assert "cannot be given with --no-update" in err
