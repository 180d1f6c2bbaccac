"""The hash-chained audit log on SQLite and PostgreSQL: knowledge changes are audited atomically, and
tampering is detected."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, insert, update

from kbservice.audit import canonical_json
from kbservice.db.schema import audit_log, chunks, documents, knowledge_versions
from kbservice.services import Services
from tests.helpers import guideline, ingest


def test_versions_are_audited_in_a_chain(services: Services, tmp_path: Path) -> None:
    ingest(services, guideline(tmp_path, "a.md", "Asthma", "ICS."), author="ana")
    doc = services.store.documents(as_of=1)[0]
    services.store.retract_document(doc.document_id, author="bo", reason="withdrawn")
    entries = list(services.audit.store.entries())
    assert [(e.seq, e.kind, e.actor) for e in entries] == [
        (1, "knowledge.version", "ana"),
        (2, "knowledge.version", "bo"),
    ]
    first, second = (e.to_json()["payload"] for e in entries)
    assert first["version"] == 1 and first["added"] == ["local:a.md"]
    assert second["version"] == 2 and second["retracted"] == ["local:a.md"]
    assert second["content_hash"] == services.store.version(2).content_hash
    assert entries[1].prev_hash == entries[0].hash
    result = services.audit.verify()
    assert result.ok and result.entries == 2


def test_audit_row_commits_with_the_version_or_not_at_all(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("audit storage failed")

    monkeypatch.setattr(services.audit, "record", fail)
    with pytest.raises(RuntimeError, match="audit storage failed"):
        ingest(services, guideline(tmp_path, "a.md", "Asthma", "ICS."))
    assert services.store.versions() == []
    assert services.store.chunk_count() == 0


@pytest.mark.parametrize("tamper", ["payload", "actor", "delete"])
def test_tampering_is_detected(services: Services, tmp_path: Path, tamper: str) -> None:
    for name in ("a", "b", "c"):
        ingest(services, guideline(tmp_path / name, f"{name}.md", name.upper(), f"Text {name}."))
    with services.engine.begin() as conn:
        if tamper == "delete":
            conn.execute(delete(audit_log).where(audit_log.c.seq == 2))
        else:
            value = '{"version":99}' if tamper == "payload" else "mallory"
            conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(**{tamper: value}))
    result = services.audit.verify()
    assert not result.ok and result.first_bad_seq == 2
    assert ("missing" if tamper == "delete" else "altered") in (result.problem or "")


@pytest.mark.parametrize("tamper", ["content_hash", "message", "hide_retraction", "insert"])
def test_version_rows_must_match_their_audit_entries(services: Services, tmp_path: Path, tamper: str) -> None:
    """The version rows are not in the chain; `verify(versions=...)` pairs each with its audit entry."""
    for name in ("a", "b", "c"):
        ingest(services, guideline(tmp_path / name, f"{name}.md", name.upper(), f"Text {name}."))
    withdrawn = next(doc for doc in services.store.documents(as_of=3) if doc.source_key.endswith("c.md"))
    services.store.retract_document(withdrawn.document_id, author="bo", reason="withdrawn")
    assert services.audit.verify(versions=services.store.versions()).ok
    rows = knowledge_versions
    with services.engine.begin() as conn:
        if tamper == "content_hash":
            conn.execute(update(rows).where(rows.c.version == 2).values(content_hash="0" * 64))
        elif tamper == "message":
            conn.execute(update(rows).where(rows.c.version == 2).values(message="nothing happened"))
        elif tamper == "hide_retraction":  # undo the retraction and remove its version as if it never was
            for table in (documents, chunks):
                conn.execute(update(table).where(table.c.version_removed == 4).values(version_removed=None))
            conn.execute(delete(rows).where(rows.c.version == 4))
        else:
            head = services.store.version(4)
            conn.execute(
                insert(rows).values(
                    version=5,
                    parent=4,
                    created_at=head.created_at,
                    author="mallory",
                    message="backdoor",
                    content_hash="f" * 64,
                    documents=head.documents,
                    chunks=head.chunks,
                    last_outbox_seq=head.last_outbox_seq,
                )
            )
    assert services.audit.verify().ok  # the chain alone cannot see it
    result = services.audit.verify(versions=services.store.versions())
    assert not result.ok and result.versions == (3 if tamper == "hide_retraction" else 4 if tamper != "insert" else 5)
    expected = {
        "content_hash": "knowledge version 2 differs from its audit row 2 (content_hash)",
        "message": "knowledge version 2 differs from its audit row 2 (message)",
        "hide_retraction": "knowledge version 4 (audit row 4) is missing from the version log",
        "insert": "knowledge version 5 has no audit entry",
    }[tamper]
    assert expected in (result.problem or "")


def test_versions_from_before_the_audit_log_are_not_flagged() -> None:
    """Installations older than migration 0003 have versions without entries, all before the first audited one."""
    from datetime import UTC, datetime

    from kbservice.audit.version_log import version_log_problem
    from kbservice.types import AuditEntry, VersionInfo

    def info(version: int) -> VersionInfo:
        return VersionInfo(
            version=version,
            parent=version - 1 or None,
            created_at=datetime.now(UTC),
            author="ana",
            message="m",
            content_hash=f"{version:064d}",
            documents=version,
            chunks=version,
            last_outbox_seq=version,
        )

    def entry(version: int, seq: int) -> AuditEntry:
        fields = info(version)
        payload = {
            k: getattr(fields, k) for k in ("version", "parent", "content_hash", "message", "documents", "chunks")
        }
        return AuditEntry(
            seq=seq, created_at="t", kind="knowledge.version", actor="ana", payload=canonical_json(payload),
            prev_hash="", hash="",
        )  # fmt: skip

    rows = [info(v) for v in (1, 2, 3, 4)]
    assert version_log_problem(rows, {3: entry(3, 1), 4: entry(4, 2)}) is None
    assert version_log_problem(rows, {}) is None  # nothing was ever audited: nothing to compare
    assert version_log_problem(rows, {2: entry(2, 1), 4: entry(4, 2)}) == (
        None,
        "knowledge version 3 has no audit entry (written or edited outside kbservice)",
    )
