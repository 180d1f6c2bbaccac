"""Incremental snapshots: an ingest into a base appends a delta (only what it added), deltas load in order, are
refused when damaged like base files, and fold into a new base (compaction) past their limits or on demand;
a compaction stopped at any write leaves the old snapshot or the new one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbservice.config import IndexSettings
from kbservice.errors import IndexMismatchError
from kbservice.services import Services, build_services, initialise
from tests.conftest import DEMO_GUIDELINES, make_settings
from tests.helpers import guideline, ingest


def manifest(services: Services) -> dict:
    return json.loads((services.settings.index_dir / "manifest.json").read_text())


def files_on_disk(services: Services) -> list[str]:
    return sorted(p.name for p in services.settings.index_dir.iterdir() if p.name != ".lock")


def reopen(services: Services) -> Services:
    again = build_services(services.settings)
    again.__dict__["embedder"] = services.embedder
    return again


@pytest.fixture
def based(tmp_path: Path) -> Iterator[Services]:
    """Demo guidelines as the base snapshot (SQLite: snapshots do not depend on the database); deltas allowed
    up to the base's size, at most three."""
    settings = make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'kb.sqlite3'}")
    settings.index = IndexSettings(exact_below=5000, compact_share=1.0, max_deltas=3)
    initialise(settings)
    services = build_services(settings)
    ingest(services, DEMO_GUIDELINES, source="demo")
    yield services
    services.close()


def small_ingest(services: Services, folder: Path, number: int) -> None:
    ingest(services, guideline(folder, f"g{number}.md", f"Gout {number}", f"Colchicine dose {number} for flares."))


def searches(services: Services) -> list:
    return [
        [(hit.chunk_id, round(hit.score, 6)) for hit in services.retriever.search(query, k=8, mode=mode).hits]
        for query in ("colchicine for gout flares", "CURB-65 severity", "nitrofurantoin pregnancy")
        for mode in ("dense", "lexical", "hybrid")
    ]


def test_a_small_ingest_appends_a_delta_and_leaves_the_base_alone(based: Services, tmp_path: Path) -> None:
    base = manifest(based)
    assert base["deltas"] == []
    small_ingest(based, tmp_path, 1)
    after = manifest(based)
    assert (after["index_file"], after["lexical_file"]) == (base["index_file"], base["lexical_file"])
    assert len(after["deltas"]) == 1 and after["deltas"][0]["vectors"] == 1
    assert after["vectors"] == base["vectors"] + 1 and after["applied_seq"] == based.store.max_outbox_seq()
    assert files_on_disk(based) == sorted(
        [base["index_file"], base["lexical_file"], after["deltas"][0]["file"], "manifest.json"]
    )
    # The build id names the newest delta: answers after this ingest record a different build.
    assert based.replica.manifest.build_id == f"seq{after['applied_seq']}-{after['deltas'][0]['sha256'][:12]}"

    again = reopen(based)
    assert again.replica.index.size == after["vectors"] == again.replica.lexical.size
    assert searches(again) == searches(based)
    assert again.retriever.search("colchicine flares", k=1).hits[0].title == "Gout 1"
    assert again.replica_unopened().verify().ok
    again.close()


def test_deltas_past_their_limits_are_folded_into_a_new_base(based: Services, tmp_path: Path) -> None:
    for number in range(1, 4):
        small_ingest(based, tmp_path, number)
    assert len(manifest(based)["deltas"]) == 3  # max_deltas
    small_ingest(based, tmp_path, 4)
    folded = manifest(based)
    assert folded["deltas"] == [] and folded["vectors"] == based.store.outbox_count(upto_seq=folded["applied_seq"])
    assert files_on_disk(based) == sorted([folded["index_file"], folded["lexical_file"], "manifest.json"])

    based.replica.settings = IndexSettings(exact_below=5000, compact_share=0.01, max_deltas=3)
    small_ingest(based, tmp_path, 5)
    assert manifest(based)["deltas"] == []  # one chunk is more than 1 % of the base: a new base, not a delta


def test_compact_folds_deltas_and_keeps_every_answer(based: Services, tmp_path: Path) -> None:
    small_ingest(based, tmp_path, 1)
    small_ingest(based, tmp_path, 2)
    before = searches(based)
    old = manifest(based)
    assert len(old["deltas"]) == 2
    compacted = based.replica.compact()
    assert compacted.deltas == () and compacted.vectors == old["vectors"]
    assert compacted.index_file != old["index_file"]
    assert files_on_disk(based) == sorted([compacted.index_file, compacted.lexical_file, "manifest.json"])
    assert searches(based) == before
    again = reopen(based)
    assert searches(again) == before
    again.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_delta_is_refused_then_rebuilt(based: Services, tmp_path: Path, damage: str) -> None:
    small_ingest(based, tmp_path, 1)
    delta = based.settings.index_dir / manifest(based)["deltas"][0]["file"]
    if damage == "flip":
        data = bytearray(delta.read_bytes())
        data[len(data) // 2] ^= 0xFF
        delta.write_bytes(bytes(data))
    elif damage == "truncate":
        delta.write_bytes(delta.read_bytes()[: delta.stat().st_size // 2])
    else:
        delta.unlink()
    with pytest.raises(IndexMismatchError, match="is missing" if damage == "delete" else "corrupt or truncated"):
        reopen(based).replica  # noqa: B018
    health = based.replica_unopened().verify()
    assert not health.ok and any("rebuild" in problem for problem in health.problems)
    based.replica_unopened().rebuild()
    assert based.replica_unopened().verify().ok
    assert reopen(based).retriever.search("colchicine flares", k=1).hits[0].title == "Gout 1"


def test_a_snapshot_replaced_by_another_process_gets_a_base_not_a_delta(based: Services, tmp_path: Path) -> None:
    # Two processes sharing one data directory: the other one wrote a new base since this one loaded.
    other = reopen(based)
    small_ingest(other, tmp_path, 1)
    other.replica.compact()
    small_ingest(based, tmp_path, 2)  # `based` still holds the older manifest in memory
    now = manifest(based)
    assert now["deltas"] == [] and now["vectors"] == based.store.outbox_count(upto_seq=now["applied_seq"])
    assert reopen(based).replica_unopened().verify().ok
    other.close()


@pytest.mark.parametrize("fail_at", [1, 2, 3])  # the index file's rename, the lexical file's, the manifest's
def test_compaction_stopped_at_any_write_leaves_a_whole_snapshot(
    based: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """Every durable step of a compaction (each file's rename, the manifest's) fails in turn, as a SIGKILL there
    would stop it: the next start-up sees the old snapshot or the new one, complete, and cleans the rest."""
    small_ingest(based, tmp_path, 1)
    small_ingest(based, tmp_path, 2)
    expected = searches(based)
    replaced = 0
    real_replace = os.replace

    def failing_replace(source: str | Path, target: str | Path) -> None:
        nonlocal replaced
        replaced += 1
        if replaced == fail_at:
            raise OSError("simulated crash")
        real_replace(source, target)

    monkeypatch.setattr("kbservice.index.snapshot.os.replace", failing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        based.replica.compact()
    monkeypatch.undo()
    again = reopen(based)
    assert searches(again) == expected
    assert again.replica_unopened().verify().ok
    named = json.loads((again.settings.index_dir / "manifest.json").read_text())
    named_files = {named["index_file"], named["lexical_file"], *(delta["file"] for delta in named["deltas"])}
    assert set(files_on_disk(again)) == named_files | {"manifest.json"}
    again.close()
