"""Real processes: two schedulers on two data directories sharing one PostgreSQL, and SIGKILL mid-training."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select

from kbservice.db.schema import adapters, update_runs
from tests.cli.test_processes import cli_env, kb, kb_started
from tests.conftest import DEMO_CASES
from tests.helpers import WIDE_GATE_ENV

pytestmark = pytest.mark.slow


def _env(data_dir: Path, database_url: str, tiny_lm_dir: Path, **extra: str) -> dict[str, str]:
    return cli_env(
        data_dir,
        database_url,
        KB_LLM__MODEL_PATH=str(tiny_lm_dir),
        KB_LEARN__MIN_NEW_CASES="5",
        KB_LEARN__INTERVAL_MINUTES="0.02",  # a tick every 1.2 s
        **extra,
    )


@pytest.mark.postgres
def test_two_schedulers_on_one_postgres_never_train_at_once(
    postgres_url: str, tiny_lm_dir: Path, tmp_path: Path
) -> None:
    # Training made long (many epochs) so that the second scheduler's ticks land while the first trains. The
    # gate is opened wide: this test is about the lease and serving from another data directory, and on the
    # tiny random model the gate's verdict is chance (with the case classifier in the fusion it rejected a1).
    env_a = _env(tmp_path / "a", postgres_url, tiny_lm_dir, KB_LEARN__EPOCHS="25", **WIDE_GATE_ENV)
    env_b = _env(tmp_path / "b", postgres_url, tiny_lm_dir, KB_LEARN__EPOCHS="25", **WIDE_GATE_ENV)
    kb(env_a, "init")
    kb(env_a, "ingest", "cases", str(DEMO_CASES))
    command = [sys.executable, "-m", "kbservice", "scheduler", "--max-cycles", "3", "--now"]
    schedulers = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for env in (env_a, env_b)
    ]
    logs = [p.communicate(timeout=300)[1] for p in schedulers]
    assert [p.returncode for p in schedulers] == [0, 0], logs
    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        runs = [dict(r._mapping) for r in conn.execute(select(update_runs).order_by(update_runs.c.started_at))]
        trained = conn.execute(select(adapters.c.version, adapters.c.status)).all()
    engine.dispose()
    # Every cycle ran under the lease: no two runs overlap in time, whichever process ran them.
    for earlier, later in pairwise(runs):
        assert earlier["finished_at"] <= later["started_at"], (earlier, later)
    assert [t.version for t in trained] == ["a1"]  # trained once; later cycles found nothing new
    assert "tick skipped: another process" in "".join(logs)  # a tick met the lease held by the other
    holders = {r["triggered_by"].rsplit(":", 1)[0] for r in runs}
    assert all(h.startswith("scheduler@") for h in holders)
    # The other data directory materialises the adapter from the database and serves it.
    answer = json.loads(kb(env_b, "recommend", "--findings", "wheeze at night", "--no-treatment", "--json").stdout)
    assert answer["provenance"]["adapter_version"] == "a1"


def _training_run_once(env: dict[str, str], database_url: str) -> tuple[subprocess.Popen, Engine]:
    """`update run-once` started in its own process, returned once its adapter row says "training"."""
    process = kb_started(env, "update", "run-once")
    engine = create_engine(database_url)
    deadline = time.time() + 120
    status = None
    while time.time() < deadline and status != "training":
        with engine.connect() as conn:
            status = conn.execute(select(adapters.c.status)).scalar_one_or_none()
        time.sleep(0.05)
    assert status == "training", process.communicate()[1]
    return process, engine


def test_a_killed_training_run_is_failed_cleaned_and_never_promoted(tiny_lm_dir: Path, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'data' / 'kb.sqlite3'}"
    env = _env(tmp_path / "data", database_url, tiny_lm_dir, KB_LEARN__EPOCHS="400", KB_LEARN__LEASE_SECONDS="3")
    kb(env, "init")
    kb(env, "ingest", "cases", str(DEMO_CASES))
    process, engine = _training_run_once(env, database_url)
    partial = tmp_path / "data" / "adapters" / ".a1.partial"
    time.sleep(1.0)  # into the training loop
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    partial.mkdir(parents=True, exist_ok=True)  # as if it had started writing files
    (partial / "adapter_model.safetensors").write_bytes(b"partial")

    time.sleep(3.5)  # the dead process's lease lapses
    env_quick = env | {"KB_LEARN__EPOCHS": "1"} | WIDE_GATE_ENV  # about the reaping, not the gate's verdict
    report = json.loads(kb(env_quick, "update", "run-once", "--json").stdout)
    assert report["reaped_adapters"] == ["a1"] and len(report["reaped_runs"]) == 1
    with engine.connect() as conn:
        rows = {r.version: r.status for r in conn.execute(select(adapters.c.version, adapters.c.status))}
        runs = [r.status for r in conn.execute(select(update_runs.c.status).order_by(update_runs.c.started_at))]
    engine.dispose()
    assert rows["a1"] == "failed" and not partial.exists() and not (partial.parent / "a1").exists()
    assert runs[0] == "failed" and report["adapter_version"] == "a2" and report["status"] == "promoted"
    adapters_listed = json.loads(kb(env, "adapters", "list", "--json").stdout)
    assert "champion" not in next(a for a in adapters_listed if a["version"] == "a1")["aliases"]


def test_a_second_run_once_by_the_same_user_waits_its_turn_instead_of_reaping_the_first(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    # Issue 15, defect 1: both commands ran as "cli:{user}@{host}"; the second took the held lease as its own,
    # marked the first cycle's live adapter failed ("reaped") and trained in parallel.
    database_url = f"sqlite:///{tmp_path / 'data' / 'kb.sqlite3'}"
    env = _env(tmp_path / "data", database_url, tiny_lm_dir, KB_LEARN__EPOCHS="400")
    kb(env, "init")
    kb(env, "ingest", "cases", str(DEMO_CASES))
    first, engine = _training_run_once(env, database_url)
    try:
        # (one epoch: before the fix the second cycle finished quickly, having reaped the first)
        second = kb(env | {"KB_LEARN__EPOCHS": "1"}, "update", "run-once", "--json", check=False)
        assert second.returncode != 0 and "another process" in second.stderr, second.stderr
        assert "pid" in second.stderr  # it names the holder's process, for humans
        with engine.connect() as conn:
            rows = conn.execute(select(adapters.c.version, adapters.c.status)).all()
        assert [tuple(r) for r in rows] == [("a1", "training")]  # not reaped, no second adapter
    finally:
        first.kill()
        first.wait(timeout=30)
        engine.dispose()
