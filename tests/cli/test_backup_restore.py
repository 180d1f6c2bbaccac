"""`backup` while the installation is in use, and `restore` into a new data directory and database, on SQLite
and PostgreSQL: afterwards `index verify`, `audit verify` and `audit replay` of every stored recommendation
pass, and the trained adapter and the de-identification key came along."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.runner import Cli
from tests.cli.snapshots import check_json_keys
from tests.conftest import DEMO_CASES, DEMO_GUIDELINES, PG_ADMIN_URL
from tests.helpers import WIDE_GATE_ENV, guideline


@pytest.fixture
def restore_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """Where the restore goes: a new SQLite file, or a second empty PostgreSQL database."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored' / 'kb.sqlite3'}"
        return
    import psycopg

    name = f"kbrestore_{uuid.uuid4().hex[:12]}"
    admin = PG_ADMIN_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_backup_while_in_use_then_restore_verifies_and_replays(
    run_with_model: Cli, tmp_path: Path, restore_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = run_with_model
    for name, value in {**WIDE_GATE_ENV, "KB_LEARN__MIN_NEW_CASES": "5", "KB_LEARN__REPLAY_CASES": "8"}.items():
        monkeypatch.setenv(name, value)
    run("ingest", "guidelines", str(DEMO_GUIDELINES))
    run("ingest", "cases", str(DEMO_CASES), "--labeled-by", "dr-a")
    assert run.json("update", "run-once")["status"] == "promoted"
    answers = [run.json("recommend", "--findings", text)["id"] for text in ("fever and cough", "wheeze at night")]
    kept = tmp_path / "checkpoints.jsonl"
    run("audit", "checkpoint", "--out", str(kept))

    # Another process keeps ingesting while the backup runs: the backup is one consistent state anyway.
    from kbservice.config import load_settings
    from kbservice.services import build_services
    from tests.helpers import ingest

    writer = build_services(load_settings())
    deid_key = writer.deid_key()  # created on first use (an image ingest, or serve's start-up)
    writes: list[BaseException] = []

    def keep_ingesting() -> None:
        try:
            for n in range(4):
                ingest(writer, guideline(tmp_path / f"w{n}", f"w{n}.md", f"Note {n}", f"Written during backup {n}."))
        except BaseException as error:
            writes.append(error)

    thread = threading.Thread(target=keep_ingesting)
    thread.start()
    made = run.json("backup", str(tmp_path / "backup"))
    thread.join()
    writer.close()
    assert not writes
    check_json_keys("backup", made)
    manifest = json.loads((tmp_path / "backup" / "backup.json").read_text())
    paths = {entry["path"] for entry in manifest["files"]}
    assert manifest["database_file"] in paths
    assert any(p.startswith("files/adapters/a1/") for p in paths)
    assert {"files/index/manifest.json", "files/deid-kek.key", "files/audit-checkpoint.key"} <= paths

    damaged = tmp_path / "damaged"
    import shutil

    shutil.copytree(tmp_path / "backup", damaged)
    (damaged / "files" / "index" / "manifest.json").write_text("{}")
    _, err = run(
        "restore", str(damaged), "--data-dir", str(tmp_path / "nowhere"), "--database-url", restore_url, expect=1
    )
    assert "checksum differs" in err and "nothing was restored" in err

    restored = tmp_path / "restored"
    done = run.json("restore", str(tmp_path / "backup"), "--data-dir", str(restored), "--database-url", restore_url)
    check_json_keys("restore", done)
    _, err = run(
        "restore", str(tmp_path / "backup"), "--data-dir", str(restored), "--database-url", restore_url, expect=1
    )
    assert "not empty" in err

    # Everything below reads the restored installation only.
    monkeypatch.setenv("KB_DATA_DIR", str(restored))
    monkeypatch.setenv("KB_DATABASE_URL", restore_url)
    assert os.environ["KB_DATA_DIR"] == str(restored)
    assert run.json("index", "verify")["ok"] is True
    verified = run.json("audit", "verify", "--checkpoint", str(kept))
    assert verified["ok"] is True and verified["checkpoints"] == 1 and verified["versions"] >= 2
    for answer in answers:
        assert run.json("audit", "replay", answer)["identical"] is True
    assert [a["aliases"] for a in run.json("adapters", "list")] == [["champion"]]
    restored_services = build_services(load_settings())
    assert restored_services.deid_key() == deid_key  # restored images keep their pseudonyms
    restored_services.close()
