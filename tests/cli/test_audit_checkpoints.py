"""Signed audit checkpoints through the real CLI, on SQLite and PostgreSQL: rows cut off the chain's end, an
altered checkpoint and a checkpoint signed by another key are all refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import create_engine, delete, func, select

from kbservice.db.schema import audit_log
from tests.cli.runner import Cli
from tests.cli.snapshots import check_json_keys
from tests.helpers import guideline


def _ingest_three(run: Cli, tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        run("ingest", "guidelines", str(guideline(tmp_path / name, f"{name}.md", name.upper(), f"Text {name}.")))


def _cut_audit_rows_after(seq: int) -> None:
    engine = create_engine(os.environ["KB_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq > seq))
        assert conn.execute(select(func.max(audit_log.c.seq))).scalar() == seq
    engine.dispose()


def test_a_checkpoint_catches_rows_cut_off_the_end(run: Cli, tmp_path: Path) -> None:
    _ingest_three(run, tmp_path)
    kept = tmp_path / "outside" / "checkpoints.jsonl"
    out, _ = run("audit", "checkpoint", "--out", str(kept))
    assert "checkpoint at row 3 appended" in out
    key = tmp_path / "data" / "audit-checkpoint.key"
    assert key.stat().st_mode & 0o777 == 0o600
    checkpoint = json.loads(kept.read_text().splitlines()[0])
    assert checkpoint["seq"] == 3 and len(checkpoint["signature"]) == 128

    verified = run.json("audit", "verify", "--checkpoint", str(kept))
    check_json_keys("audit verify", verified)
    assert verified["ok"] and verified["checkpoints"] == 1 and verified["versions"] == 3
    printed, _ = run("audit", "checkpoint")  # printed, not appended: one JSON line on stdout
    assert json.loads(printed)["seq"] == 3

    _cut_audit_rows_after(2)  # the chain that is left still verifies on its own ...
    assert run.json("audit", "list")[-1]["seq"] == 2
    # ... but not against the version log (version 3 lost its entry) nor against the checkpoint
    out, _ = run("audit", "verify", "--checkpoint", str(kept), expect=1)
    assert "audit log NOT OK" in out


def test_the_checkpoint_alone_sees_the_cut_when_versions_agree(run: Cli, tmp_path: Path) -> None:
    """Rows after the last version entry (a key creation, here) are invisible to the version check."""
    _ingest_three(run, tmp_path)
    run("keys", "create", "--name", "ops", "--role", "reader")
    kept = tmp_path / "checkpoints.jsonl"
    run("audit", "checkpoint", "--out", str(kept))
    _cut_audit_rows_after(3)
    assert run.json("audit", "verify")["ok"] is True
    result = run.json("audit", "verify", "--checkpoint", str(kept), expect=1)
    assert result["first_bad_seq"] == 4
    assert "no longer reaches the checkpoint at row 4" in result["problem"]
    assert "it ends at row 3" in result["problem"]


def test_altered_or_foreign_checkpoints_are_refused(run: Cli, tmp_path: Path) -> None:
    _ingest_three(run, tmp_path)
    kept = tmp_path / "checkpoints.jsonl"
    run("audit", "checkpoint", "--out", str(kept))
    original = json.loads(kept.read_text())

    altered = tmp_path / "altered.jsonl"
    altered.write_text(json.dumps({**original, "seq": 2}) + "\n")
    result = run.json("audit", "verify", "--checkpoint", str(altered), expect=1)
    assert "invalid signature" in result["problem"]

    foreign = tmp_path / "foreign.jsonl"
    run("audit", "checkpoint", "--out", str(foreign), "--key", str(tmp_path / "other.key"))
    result = run.json("audit", "verify", "--checkpoint", str(foreign), expect=1)
    assert "not trusted" in result["problem"]
    # trusting that key on purpose accepts it
    trusted = json.loads(foreign.read_text())["public_key"]
    assert run.json("audit", "verify", "--checkpoint", str(foreign), "--public-key", trusted)["ok"] is True

    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n")
    _, err = run("audit", "verify", "--checkpoint", str(garbage), expect=1)
    assert "garbage.jsonl:1 is not an audit checkpoint" in err
