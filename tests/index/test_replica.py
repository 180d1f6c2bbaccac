"""The index replica: snapshots, replay from the outbox, refusal of bad snapshots, rebuild, HNSW switch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbservice.config import IndexSettings
from kbservice.errors import IndexMismatchError
from kbservice.services import Services, build_services
from tests.conftest import DEMO_GUIDELINES
from tests.helpers import guideline, ingest


def reopen(services: Services) -> Services:
    """A second process's view of the same data dir and database (fresh replica from disk)."""
    again = build_services(services.settings)
    again.__dict__["embedder"] = services.embedder
    return again


def manifest(services: Services) -> dict:
    return json.loads((services.settings.index_dir / "manifest.json").read_text())


def test_snapshot_manifest_records_position_and_embedder(services: Services) -> None:
    report = ingest(services, DEMO_GUIDELINES)
    data = manifest(services)
    assert data["applied_seq"] == services.store.max_outbox_seq() == report.chunks
    assert data["vectors"] == report.chunks
    assert data["embedder_id"] == services.embedder.embedder_id
    assert data["dimension"] == 384 and data["kind"] == "flat"
    index_files = list(services.settings.index_dir.glob("index-*.faiss"))
    assert [p.name for p in index_files] == [data["index_file"]]
    assert services.replica_unopened().verify().ok


def test_open_replays_what_the_snapshot_lacks(services: Services, tmp_path: Path) -> None:
    ingest(services, guideline(tmp_path, "a.md", "Asthma", "Inhaled corticosteroids."))
    index_dir = services.settings.index_dir
    stale = (index_dir / "manifest.json").read_text()
    stale_files = [json.loads(stale)["index_file"], json.loads(stale)["lexical_file"]]
    saved = {name: (index_dir / name).read_bytes() for name in stale_files}
    ingest(services, guideline(tmp_path, "b.md", "COPD", "Tiotropium bromide."))
    # Simulate a crash after the SQL commit but before the snapshot: restore the old snapshot.
    for name, content in saved.items():
        (index_dir / name).write_bytes(content)
    (index_dir / "manifest.json").write_text(stale)
    health = services.replica_unopened().verify()
    assert health.ok, health.problems  # verify applies the pending outbox in memory
    again = reopen(services)
    assert again.replica.applied_seq == services.store.max_outbox_seq()
    assert again.retriever.search("tiotropium", k=1).hits[0].title == "COPD"
    assert manifest(again)["applied_seq"] == services.store.max_outbox_seq()


def test_files_left_by_a_killed_snapshot_writer_are_removed_at_start_up(services: Services) -> None:
    # Issue 15, defect 6: a snapshot killed mid-write left its temp files until the next snapshot was written.
    ingest(services, DEMO_GUIDELINES)
    index_dir = services.settings.index_dir
    named = [manifest(services)["index_file"], manifest(services)["lexical_file"]]
    leftovers = [
        index_dir / ".index-99-deadbeef.faiss.tmp",  # killed while writing the index file
        index_dir / ".manifest.json.0badf00d.tmp",  # killed while writing the manifest
        index_dir / "index-99-deadbeef.faiss",  # killed after renaming the index, before the manifest
        index_dir / "lexical-99-deadbeef.npz",  # the same for the lexical index
    ]
    for path in leftovers:
        path.write_bytes(b"partial")
    again = reopen(services)
    assert again.replica.applied_seq == services.store.max_outbox_seq()
    assert sorted(p.name for p in index_dir.iterdir() if p.name != ".lock") == sorted([*named, "manifest.json"])
    assert again.retriever.search("CURB-65 severity", k=1).hits


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_damaged_snapshot_is_refused_then_rebuilt(services: Services, damage: str) -> None:
    ingest(services, DEMO_GUIDELINES)
    index_dir = services.settings.index_dir
    index_file = index_dir / manifest(services)["index_file"]
    if damage == "truncate":
        index_file.write_bytes(index_file.read_bytes()[: index_file.stat().st_size // 2])
    elif damage == "flip":
        data = bytearray(index_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        index_file.write_bytes(bytes(data))
    elif damage == "delete":
        index_file.unlink()
    else:
        (index_dir / "manifest.json").write_text('{"format": 1, "index_')
    expected = {
        "truncate": "corrupt or truncated",
        "flip": "corrupt or truncated",
        "delete": "is missing",
        "manifest": "manifest .* is corrupt",
    }[damage]
    with pytest.raises(IndexMismatchError, match=expected):
        reopen(services).replica  # noqa: B018
    health = services.replica_unopened().verify()
    assert not health.ok and any("rebuild" in p for p in health.problems)
    services.replica_unopened().rebuild()
    assert services.replica_unopened().verify().ok
    assert reopen(services).retriever.search("spirometry", k=1).hits


def test_index_from_another_embedder_is_refused(services: Services, tiny_embedder_dir: Path) -> None:
    from kbservice.index.embedder import SentenceTransformerEmbedder

    ingest(services, DEMO_GUIDELINES)
    other = reopen(services)
    other.__dict__["embedder"] = SentenceTransformerEmbedder(tiny_embedder_dir)
    with pytest.raises(IndexMismatchError, match=r"embedded with .*configured embedder is tiny"):
        other.replica  # noqa: B018
    data = manifest(services)
    data["embedder_id"] = "someone-else@0000/d384"
    (services.settings.index_dir / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(IndexMismatchError, match="built by embedder someone-else"):
        reopen(services).replica  # noqa: B018


def test_reembed_switches_embedders(services: Services, tiny_embedder_dir: Path) -> None:
    from kbservice.index.embedder import SentenceTransformerEmbedder
    from kbservice.ingest.reembed import reembed_all
    from kbservice.progress import NoProgress

    ingest(services, DEMO_GUIDELINES)
    other = reopen(services)
    other.__dict__["embedder"] = SentenceTransformerEmbedder(tiny_embedder_dir)
    assert reembed_all(store=other.store, embedder=other.embedder, progress=NoProgress()) == other.store.chunk_count()
    other.replica_unopened().rebuild()
    assert other.replica.index.dimension == 32
    assert other.replica_unopened().verify().ok


def test_auto_kind_switches_to_hnsw_above_threshold(services: Services, tmp_path: Path) -> None:
    services.settings.index = IndexSettings(exact_below=30, approximate_kind="hnsw")
    report = ingest(services, DEMO_GUIDELINES)
    assert report.chunks >= 30
    assert services.replica.index.kind == "hnsw"
    assert manifest(services)["kind"] == "hnsw"
    hits = services.retriever.search("CURB-65 severity score", k=3, mode="dense").hits
    assert "CURB-65" in hits[0].text


def test_pq_kind_stays_exact_until_it_has_data_to_train(services: Services) -> None:
    services.settings.index = IndexSettings(kind="pq")
    ingest(services, DEMO_GUIDELINES)
    assert services.replica.index.kind == "flat"
