"""Real processes: replicas in two data directories sharing one PostgreSQL, and SIGKILL during ingest."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kbservice.db.schema import chunks, documents, index_outbox
from kbservice.services import build_services
from tests.conftest import DEMO_GUIDELINES, REPO_ROOT, make_settings, write
from tests.helpers import guideline, ingest

pytestmark = pytest.mark.slow
BATCH_DOCS = 300  # about 2,400 chunks per ingest


def cli_env(data_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KB_DATA_DIR=str(data_dir),
        KB_DATABASE_URL=database_url,
        HF_HUB_OFFLINE="1",
        KB_CONFIG=str(REPO_ROOT / "config" / "test.toml"),
        **extra,
    )
    return env


def kb_started(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`kbservice --quiet ARGS` started in its own process (to be killed, or waited for, by the test)."""
    return subprocess.Popen(
        [sys.executable, "-m", "kbservice", "--quiet", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kb(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "kbservice", "--quiet", *args], env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.mark.postgres
def test_two_processes_two_data_dirs_one_postgres(postgres_url: str, tmp_path: Path) -> None:
    env_a = cli_env(tmp_path / "a", postgres_url)
    env_b = cli_env(tmp_path / "b", postgres_url)
    kb(env_a, "init")
    kb(env_b, "init")
    kb(env_a, "ingest", "guidelines", str(DEMO_GUIDELINES))
    hits = json.loads(kb(env_b, "search", "CURB-65 severity", "--json").stdout)
    assert "CURB-65" in hits[0]["text"]
    guideline(tmp_path / "new", "gout.md", "Gout", "## Treatment\nColchicine or naproxen for acute gout flares.")
    kb(env_a, "ingest", "guidelines", str(tmp_path / "new"))
    hits = json.loads(kb(env_b, "search", "colchicine for gout flares", "--json").stdout)
    assert hits[0]["title"] == "Gout" and hits[0]["version_added"] == 2
    for env in (env_a, env_b):
        health = json.loads(kb(env, "index", "verify", "--json").stdout)
        assert health["ok"] and health["applied_seq"] == health["outbox_seq"]
    manifest_b = json.loads((tmp_path / "b" / "index" / "manifest.json").read_text())
    assert manifest_b["applied_seq"] == health["outbox_seq"]


@pytest.mark.postgres
def test_a_replica_serves_only_versions_it_has_applied(postgres_url: str, tmp_path: Path) -> None:
    writer = build_services(make_settings(tmp_path / "w", postgres_url))
    from kbservice.services import initialise

    initialise(writer.settings)
    reader = build_services(make_settings(tmp_path / "r", postgres_url))
    reader.__dict__["embedder"] = writer.embedder
    ingest(writer, guideline(tmp_path, "a.md", "Asthma", "Inhaled corticosteroids."))
    assert reader.replica.serving_version() == 1
    ingest(writer, guideline(tmp_path, "b.md", "COPD", "Tiotropium."))
    # Not yet caught up: version 2 exists in SQL, but this replica lacks its vectors, so it serves 1.
    assert reader.replica.serving_version() == 1
    assert reader.store.version_for_outbox_seq(reader.replica.applied_seq) == 1
    assert reader.retriever.search("tiotropium", k=1).hits[0].title == "COPD"  # search catches up first
    assert reader.replica.serving_version() == 2
    writer.close()
    reader.close()


def _batch(folder: Path, round_number: int, docs: int = BATCH_DOCS) -> Path:
    rng = random.Random(round_number)
    vocabulary = "fever cough dyspnoea amoxicillin apixaban metformin spirometry oedema ramipril wheeze".split()  # noqa: SIM905
    for i in range(docs):
        sections = []
        for s in range(4):
            sentences = " ".join(
                f"Round {round_number} document {i} section {s} sentence {k} mentions "
                f"{' '.join(rng.choices(vocabulary, k=12))}."
                for k in range(12)
            )
            sections.append(f"## Section {s}\n{sentences}")
        write(folder / f"doc{i:04d}.md", f"# Guideline {round_number}-{i}\n\n" + "\n\n".join(sections))
    return folder


def _consistent(database_url: str, tmp_path: Path) -> dict[int, int]:
    """Checks SQL invariants after a crash; returns documents added per version."""
    settings = make_settings(tmp_path / "probe", database_url)
    store = build_services(settings).store
    with store.engine.connect() as conn:
        per_version = dict(
            conn.execute(select(documents.c.version_added, func.count()).group_by(documents.c.version_added)).all()
        )
        n_chunks = conn.execute(select(func.count()).select_from(chunks)).scalar_one()
        n_outbox = conn.execute(select(func.count()).select_from(index_outbox)).scalar_one()
    assert n_chunks == n_outbox, "a chunk without its outbox entry (or the reverse) is visible"
    versions = store.versions()
    assert [v.version for v in versions] == list(range(1, len(versions) + 1))
    for v in versions:
        assert v.chunks == sum(d.chunks for d in store.documents(as_of=v.version))
    store.engine.dispose()
    return per_version


def _kill_after(process: subprocess.Popen[str], seconds: float) -> float | None:
    """SIGKILLs `process` `seconds` after now unless it ends first; returns how long it ran if it did (so
    a test can aim its next kill inside that time), None if it was killed."""
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        if process.poll() is not None:
            return time.perf_counter() - started
        time.sleep(0.005)
    if process.poll() is not None:
        return time.perf_counter() - started
    process.send_signal(signal.SIGKILL)
    return None


def _verify(database_url: str, tmp_path: Path, embedder_dir: Path):  # type: ignore[no-untyped-def]
    """`index verify` in this process (same code as the CLI) against the crashed process's data dir."""
    from kbservice.config import EmbedderSettings

    services = build_services(
        make_settings(tmp_path / "data", database_url, embedder=EmbedderSettings(model_path=embedder_dir))
    )
    try:
        return services.replica_unopened().verify()
    finally:
        services.close()


@pytest.mark.parametrize(
    ("backend", "snapshots"),
    [
        ("sqlite", "bases"),
        ("sqlite", "deltas"),  # every ingest appends a delta: the kill lands in delta writes too
        pytest.param("postgresql", "bases", marks=pytest.mark.postgres),
    ],
)
def test_sigkill_during_ingest_loses_nothing_acknowledged(
    backend: str, snapshots: str, tmp_path: Path, tiny_embedder_dir: Path, request: pytest.FixtureRequest
) -> None:
    database_url = (
        f"sqlite:///{tmp_path / 'data' / 'kb.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    env = cli_env(
        tmp_path / "data",
        database_url,
        KB_EMBEDDER__MODEL_PATH=str(tiny_embedder_dir),
        KB_INDEX__COMPACT_SHARE="100" if snapshots == "deltas" else "0",
    )
    kb(env, "init")
    kb(env, "ingest", "guidelines", str(_batch(tmp_path / "batch0", 0)))
    # One whole ingest more: with deltas on, the snapshot now ends in a delta, so the kills below land on
    # delta appends (with them off, on whole rewrites). This one is timed, not the first: like the rounds
    # below it ingests into an existing base. A round that ends before its kill becomes the next aim (kills
    # aimed by one fixed time once landed 2 times in 10 rounds, the later ingests being quicker).
    started = time.perf_counter()
    kb(env, "ingest", "guidelines", str(_batch(tmp_path / "batch-whole", 100)))
    full_run = time.perf_counter() - started
    deltas = json.loads((tmp_path / "data" / "index" / "manifest.json").read_text())["deltas"]
    assert bool(deltas) == (snapshots == "deltas")
    acknowledged = {1, 2}
    rng = random.Random(2026)
    kills = rounds = 0
    # Kill at random points until at least three ingests died mid-way (an ingest that finishes first
    # still counts as a round: its acknowledged version must survive too).
    while kills < 3:
        rounds += 1
        assert rounds <= 10, f"only {kills} ingests were killed mid-way in {rounds - 1} rounds"
        folder = _batch(tmp_path / f"batch{rounds}", rounds)
        process = kb_started(env, "ingest", "guidelines", str(folder))
        finished_in = _kill_after(process, rng.uniform(0.15, 0.95) * full_run)
        if finished_in is None:
            kills += 1
        else:
            full_run = finished_in  # quicker than aimed for: aim the next kill inside this run's time
        stdout, _ = process.communicate(timeout=60)
        if stdout.startswith("version "):
            acknowledged.add(int(stdout.split()[1].rstrip(":")))
        per_version = _consistent(database_url, tmp_path)
        assert acknowledged <= set(per_version), "an acknowledged version was lost"
        assert all(count == BATCH_DOCS for count in per_version.values()), f"half-written version: {per_version}"
        health = _verify(database_url, tmp_path, tiny_embedder_dir)
        assert health.ok, health
    hits = json.loads(kb(env, "search", "Round 0 document 3 section 1", "--json").stdout)
    assert hits
    assert json.loads(kb(env, "index", "verify", "--json").stdout)["ok"]


def test_sigkill_during_compaction_leaves_a_whole_snapshot(tmp_path: Path, tiny_embedder_dir: Path) -> None:
    env = cli_env(
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'data' / 'kb.sqlite3'}",
        KB_EMBEDDER__MODEL_PATH=str(tiny_embedder_dir),
        KB_INDEX__COMPACT_SHARE="100",
    )
    kb(env, "init")
    kb(env, "ingest", "guidelines", str(_batch(tmp_path / "batch0", 0)))
    rng = random.Random(7)
    kills = rounds = 0
    whole_run = float("inf")
    while kills < 3:
        rounds += 1
        assert rounds <= 10, f"only {kills} compactions were killed mid-way in {rounds - 1} rounds"
        kb(env, "ingest", "guidelines", str(_batch(tmp_path / f"batch{rounds}", rounds, docs=20)))  # a delta
        assert json.loads((tmp_path / "data" / "index" / "manifest.json").read_text())["deltas"]
        started = time.perf_counter()
        probe = kb(env, "index", "verify")  # as long as the compaction's start-up and load
        load_time = time.perf_counter() - started
        assert probe.returncode == 0
        process = kb_started(env, "index", "compact")
        aim = load_time * rng.uniform(0.9, 1.4)  # around the end of loading: the writes follow it
        if aim >= whole_run:  # a compaction already finished sooner than that: aim inside its time
            aim = whole_run * rng.uniform(0.7, 0.95)
        finished_in = _kill_after(process, aim)
        if finished_in is None:
            kills += 1
        else:
            whole_run = finished_in
        process.communicate(timeout=60)
        health = _verify(f"sqlite:///{tmp_path / 'data' / 'kb.sqlite3'}", tmp_path, tiny_embedder_dir)
        assert health.ok, health
    assert json.loads(kb(env, "search", f"Round {rounds} document 3 section 1", "--json").stdout)
    kb(env, "index", "compact")
    assert json.loads((tmp_path / "data" / "index" / "manifest.json").read_text())["deltas"] == []
    assert json.loads(kb(env, "index", "verify", "--json").stdout)["ok"]
