"""The hash-chained audit log on SQLite and PostgreSQL: knowledge changes are audited atomically, and
tampering is detected."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, update

from kbservice.db.schema import audit_log
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
