"""Versioned storage on SQLite and PostgreSQL with the real embedder."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbservice.errors import IngestError, UnknownDocumentError, UnknownVersionError
from kbservice.services import Services
from tests.conftest import write
from tests.helpers import guideline, ingest, store_fingerprint


def test_first_ingest_creates_version_one(services: Services, tmp_path: Path) -> None:
    guideline(tmp_path / "g", "cap.md", "Pneumonia", "## Treatment\nAmoxicillin for five days.")
    guideline(tmp_path / "g", "pe.md", "Pulmonary embolism", "## Diagnosis\nCT pulmonary angiography.")
    report = ingest(services, tmp_path / "g", source="demo", message="first")
    assert report.version == 1
    assert sorted(report.added) == ["demo:cap.md", "demo:pe.md"]
    (version,) = services.store.versions()
    assert (version.version, version.parent, version.author, version.message) == (1, None, "tester", "first")
    assert version.documents == 2
    assert version.chunks == report.chunks == services.store.chunk_count()
    assert version.last_outbox_seq == services.store.max_outbox_seq() == report.chunks
    assert len(version.content_hash) == 64


def test_identical_reingest_is_a_noop(services: Services, tmp_path: Path) -> None:
    path = guideline(tmp_path, "cap.md", "Pneumonia", "Amoxicillin.")
    ingest(services, path)
    before = store_fingerprint(services)
    report = ingest(services, path)
    assert report.version is None
    assert report.unchanged == ["local:cap.md"]
    assert store_fingerprint(services) == before


def test_changed_document_supersedes_in_new_version(services: Services, tmp_path: Path) -> None:
    path = guideline(tmp_path, "cap.md", "Pneumonia", "Amoxicillin for five days.")
    ingest(services, path)
    old_doc = services.store.documents(as_of=1)[0]
    guideline(tmp_path, "cap.md", "Pneumonia", "Doxycycline for five days.")
    report = ingest(services, path)
    assert report.version == 2
    assert report.superseded == ["local:cap.md"] and report.added == []
    now = services.store.documents(as_of=2)
    assert len(now) == 1 and now[0].document_id != old_doc.document_id
    assert [d.document_id for d in services.store.documents(as_of=1)] == [old_doc.document_id]
    assert services.store.version(2).documents == 1
    assert services.store.version(2).chunks == now[0].chunks


def test_retract_closes_the_range(services: Services, tmp_path: Path) -> None:
    guideline(tmp_path / "g", "a.md", "Asthma", "Inhaled corticosteroids.")
    guideline(tmp_path / "g", "b.md", "COPD", "Tiotropium.")
    ingest(services, tmp_path / "g")
    doc = next(d for d in services.store.documents(as_of=1) if d.title == "Asthma")
    info = services.store.retract_document(doc.document_id, author="curator", reason="withdrawn by publisher")
    assert (info.version, info.parent, info.message, info.documents) == (2, 1, "withdrawn by publisher", 1)
    assert [d.title for d in services.store.documents(as_of=2)] == ["COPD"]
    assert {d.title for d in services.store.documents(as_of=1)} == {"Asthma", "COPD"}
    with pytest.raises(UnknownDocumentError, match="already removed in version 2"):
        services.store.retract_document(doc.document_id, author="x", reason="again")
    with pytest.raises(UnknownDocumentError, match="does not exist"):
        services.store.retract_document(99999, author="x", reason="nope")


def test_diff_between_versions(services: Services, tmp_path: Path) -> None:
    ingest(services, guideline(tmp_path, "a.md", "Asthma", "Inhaled corticosteroids."))
    ingest(services, guideline(tmp_path, "b.md", "COPD", "Tiotropium."))
    doc_a = next(d for d in services.store.documents(as_of=2) if d.title == "Asthma")
    services.store.retract_document(doc_a.document_id, author="x", reason="r")
    diff = services.store.diff(1, 3)
    assert [d["title"] for d in diff.documents_added] == ["COPD"]
    assert [d["title"] for d in diff.documents_removed] == ["Asthma"]
    assert diff.chunks_added >= 1 and diff.chunks_removed >= 1
    with pytest.raises(UnknownVersionError, match="version 7 does not exist"):
        services.store.diff(1, 7)


def test_version_hash_chain_is_reproducible(tmp_path: Path, services: Services) -> None:
    """Two stores with the same history have the same version hashes (timestamps are not hashed)."""
    from kbservice.services import build_services, initialise
    from tests.conftest import make_settings

    other_settings = make_settings(tmp_path / "other", None)
    initialise(other_settings)
    other = build_services(other_settings)
    for target in (services, other):
        ingest(target, guideline(tmp_path / "src1", "a.md", "Asthma", "ICS."), message="m1")
        ingest(target, guideline(tmp_path / "src2", "b.md", "COPD", "LAMA."), message="m2")
    hashes = [[v.content_hash for v in s.store.versions()] for s in (services, other)]
    assert hashes[0] == hashes[1]
    assert hashes[0][0] != hashes[0][1]
    other.close()


def test_bad_file_in_batch_changes_nothing(services: Services, tmp_path: Path) -> None:
    ingest(services, guideline(tmp_path, "ok.md", "Asthma", "ICS."))
    before = store_fingerprint(services)
    guideline(tmp_path / "batch", "good.md", "COPD", "LAMA.")
    write(tmp_path / "batch" / "bad.jsonl", '{"title": "x", "text": "y"}\nnot json\n')
    write(tmp_path / "batch" / "empty.txt", "")
    with pytest.raises(IngestError) as caught:
        ingest(services, tmp_path / "batch")
    assert {Path(p).name for p, _ in caught.value.problems} == {"bad.jsonl", "empty.txt"}
    assert "line 2: not valid JSON" in str(caught.value)
    assert store_fingerprint(services) == before


def test_skip_bad_ingests_the_good_files(services: Services, tmp_path: Path) -> None:
    guideline(tmp_path / "batch", "good.md", "COPD", "LAMA.")
    write(tmp_path / "batch" / "empty.txt", "")
    report = ingest(services, tmp_path / "batch", skip_bad=True)
    assert report.added == ["local:good.md"]
    assert [(Path(path).name, reason) for path, reason in report.rejected] == [("empty.txt", "empty file")]


def test_duplicate_identities_in_one_batch(services: Services, tmp_path: Path) -> None:
    batch = write(tmp_path / "g.jsonl", '{"id": "x", "title": "A", "text": "a"}\n')
    write(tmp_path / "h.jsonl", '{"id": "x", "title": "B", "text": "b"}\n')
    one = guideline(tmp_path / "dup", "same.md", "Same", "One.")
    two = guideline(tmp_path / "other", "same.md", "Same", "Two.")
    with pytest.raises(IngestError, match="2 documents in this batch share this identity"):
        ingest(services, one, two)
    report = ingest(services, one, two, batch, skip_bad=True)
    assert report.added == ["local:g.jsonl#x"]
    assert report.rejected == [("local:same.md", "2 documents in this batch share this identity")]


def test_unknown_version_is_a_clear_error(services: Services) -> None:
    with pytest.raises(UnknownVersionError, match="knowledge base is empty"):
        services.store.version(3)
