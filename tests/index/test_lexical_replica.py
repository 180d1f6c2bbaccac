"""The in-memory lexical replica: it ranks as SQLite FTS5's bm25() does (same ids, same order, same scores) at
every version and kind, survives restarts and damage like the vector snapshot, and falls back to SQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kbservice.config import IndexSettings
from kbservice.errors import IndexMismatchError
from kbservice.index.bm25_index import Bm25Index, read_bm25
from kbservice.index.fts_tokens import FtsTokenizer
from kbservice.services import Services, build_services
from tests.conftest import DEMO_GUIDELINES, REPO_ROOT
from tests.helpers import guideline, ingest, ingest_case_file

QUERIES = [
    "nitrofurantoin for cystitis in pregnancy",
    "apixaban anticoagulation pulmonary embolism",
    "infection infections infected",  # three words, one Porter stem: FTS5 counts each phrase
    "CURB-65 severity score for pneumonia",
    "inhaled corticosteroids asthma exacerbation",
    "blood pressure target in diabetes",
    "fever cough",
    "shortness of breath and chest pain",
    "metformin",
    "zzzunknownword",
    "the of and",
]


def memory_and_sql(services: Services, query: str, *, version: int, kind: str | None) -> tuple[list, list]:
    limit = 10_000  # everything that matches: FTS5 orders ties arbitrarily, so compare whole result sets
    memory = services.replica.lexical_search(query, k=limit, version=version, kind=kind)
    sql = services.store.lexical_search(query, version=version, limit=limit, kind=kind)
    assert memory is not None
    return memory, sql


def assert_same_ranking(memory: list[tuple[int, float]], sql: list[tuple[int, float]]) -> None:
    assert [cid for cid, _ in memory] == [cid for cid, _ in sorted(sql, key=lambda pair: (-pair[1], pair[0]))]
    assert np.allclose([s for _, s in memory], sorted((s for _, s in sql), reverse=True), rtol=1e-12, atol=0)


@pytest.fixture
def sqlite_services(tmp_path: Path) -> Iterator[Services]:
    from kbservice.services import initialise
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'data' / 'kb.sqlite3'}")
    initialise(settings)
    built = build_services(settings)
    yield built
    built.close()


def build_history(services: Services, folder: Path) -> None:
    """v1 demo guidelines; v2 demo cases; v3 a superseded guideline; v4 a retraction."""
    ingest(services, DEMO_GUIDELINES, source="demo")
    ingest_case_file(services, REPO_ROOT / "kbservice" / "demo" / "cases.jsonl")
    path = guideline(folder, "uti.md", "Cystitis", "Nitrofurantoin treats cystitis; infection infections.")
    ingest(services, path)
    head = services.store.head().version
    cystitis = next(d for d in services.store.documents(as_of=head) if d.title == "Cystitis")
    services.store.retract_document(cystitis.document_id, author="t", reason="r")


def test_replica_ranks_exactly_as_fts5_at_every_version_and_kind(sqlite_services: Services, tmp_path: Path) -> None:
    build_history(sqlite_services, tmp_path)
    head = sqlite_services.store.head().version
    assert head >= 4
    compared = 0
    for version in range(1, head + 1):
        for kind in (None, "guideline", "case"):
            for query in QUERIES:
                memory, sql = memory_and_sql(sqlite_services, query, version=version, kind=kind)
                assert_same_ranking(memory, sql)
                compared += len(sql)
    assert compared > 500  # the comparison covered real result lists, not empty ones


def test_repeated_stems_count_once_per_query_word(sqlite_services: Services) -> None:
    ingest(sqlite_services, DEMO_GUIDELINES, source="demo")
    tokenizer = FtsTokenizer()
    assert tokenizer.stems("infections") == tokenizer.stems("infection") == ("infect",)
    once = dict(sqlite_services.replica.lexical_search("infection", k=50, version=1) or [])
    twice = dict(sqlite_services.replica.lexical_search("infection infections", k=50, version=1) or [])
    assert once and set(once) == set(twice)
    assert all(twice[cid] == pytest.approx(2 * once[cid]) for cid in once)


def test_search_uses_the_replica_and_reopens_from_its_snapshot(
    sqlite_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(sqlite_services, DEMO_GUIDELINES, source="demo")
    index_dir = sqlite_services.settings.index_dir
    data = json.loads((index_dir / "manifest.json").read_text())
    assert data["lexical_file"] and (index_dir / data["lexical_file"]).is_file()
    stored = read_bm25(index_dir / data["lexical_file"])
    assert sorted(stored.ids()) == sorted(sqlite_services.replica.index.ids())
    before = sqlite_services.retriever.search("nitrofurantoin cystitis pregnancy", k=5, mode="lexical").hits

    again = build_services(sqlite_services.settings)
    again.__dict__["embedder"] = sqlite_services.embedder

    def no_sql(*args: object, **kwargs: object) -> None:
        raise AssertionError("the SQL full-text index was asked; the replica should have answered")

    monkeypatch.setattr(again.store, "lexical_search", no_sql)
    after = again.retriever.search("nitrofurantoin cystitis pregnancy", k=5, mode="lexical").hits
    assert [(h.chunk_id, h.score) for h in after] == [(h.chunk_id, h.score) for h in before]
    assert after[0].title == "Lower urinary tract infection in adults"
    again.close()


def test_a_snapshot_without_the_lexical_index_gets_one_at_start_up(sqlite_services: Services) -> None:
    # Snapshots written before the lexical replica existed (or with it off) name only the FAISS file.
    settings = sqlite_services.settings
    settings.index = IndexSettings(exact_below=5000, lexical_replica=False)
    off = build_services(settings)
    off.__dict__["embedder"] = sqlite_services.embedder
    ingest(off, DEMO_GUIDELINES, source="demo")
    base_only = (settings.index_dir / "manifest.json").read_text()
    ingest(off, guideline(settings.data_dir, "gout.md", "Gout", "Colchicine for flares."))  # a delta, no tokens
    assert off.replica.lexical is None
    written_off = json.loads((settings.index_dir / "manifest.json").read_text())
    assert written_off["lexical_file"] is None and len(written_off["deltas"]) == 1
    off.close()
    # As if the process died before its snapshot: version 2 is in SQL but not in the snapshot, so the
    # next start-up builds the lexical index and catches up in one go.
    (settings.index_dir / "manifest.json").write_text(base_only)

    settings.index = IndexSettings(exact_below=5000, lexical_replica=True)
    on = build_services(settings)
    on.__dict__["embedder"] = sqlite_services.embedder
    assert on.replica.lexical is not None and on.replica.lexical.size == on.replica.index.size
    written_on = json.loads((settings.index_dir / "manifest.json").read_text())
    assert written_on["lexical_file"] and written_on["deltas"] == []  # a whole new base, with its lexical file
    for version in (1, 2):
        memory, sql = memory_and_sql(on, "asthma inhaler colchicine", version=version, kind=None)
        assert_same_ranking(memory, sql)
    assert on.replica_unopened().verify().ok
    on.close()


def test_with_the_replica_off_sql_answers(sqlite_services: Services) -> None:
    sqlite_services.settings.index = IndexSettings(exact_below=5000, lexical_replica=False)
    ingest(sqlite_services, DEMO_GUIDELINES, source="demo")
    assert sqlite_services.replica.lexical_search("asthma", k=5, version=1) is None
    hits = sqlite_services.retriever.search("spirometry COPD", k=3, mode="lexical").hits
    assert hits[0].title.startswith("Chronic obstructive")


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_a_damaged_lexical_file_is_refused_then_rebuilt(sqlite_services: Services, damage: str) -> None:
    ingest(sqlite_services, DEMO_GUIDELINES, source="demo")
    index_dir = sqlite_services.settings.index_dir
    lexical_file = index_dir / json.loads((index_dir / "manifest.json").read_text())["lexical_file"]
    if damage == "flip":
        data = bytearray(lexical_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        lexical_file.write_bytes(bytes(data))
    else:
        lexical_file.unlink()
    reopened = build_services(sqlite_services.settings)
    reopened.__dict__["embedder"] = sqlite_services.embedder
    with pytest.raises(IndexMismatchError, match="corrupt or truncated" if damage == "flip" else "is missing"):
        reopened.replica  # noqa: B018
    health = sqlite_services.replica_unopened().verify()
    assert not health.ok and any("rebuild" in problem for problem in health.problems)
    sqlite_services.replica_unopened().rebuild()
    assert sqlite_services.replica_unopened().verify().ok
    memory, sql = memory_and_sql(sqlite_services, "spirometry", version=1, kind=None)
    assert_same_ranking(memory, sql)


def test_replica_filters_versions_and_kinds_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    # PostgreSQL ranks with ts_rank; the replica ranks as FTS5 does, so compare with the SQLite replica.
    from kbservice.services import initialise
    from tests.conftest import make_settings

    rankings = []
    for url in (postgres_url, f"sqlite:///{tmp_path / 'lite' / 'kb.sqlite3'}"):
        settings = make_settings(tmp_path / ("pg" if url == postgres_url else "lite"), url)
        initialise(settings)
        services = build_services(settings)
        build_history(services, tmp_path / "docs")
        head = services.store.head().version

        def texts(found: list[tuple[int, float]], services: Services = services) -> list[tuple[str, float]]:
            return [(hit.text, round(hit.score, 9)) for hit in services.store.hits([(c, s, None, 1) for c, s in found])]

        rankings.append(
            [
                texts(services.replica.lexical_search(query, k=20, version=version, kind=kind) or [])
                for version in range(1, head + 1)
                for kind in (None, "case")
                for query in QUERIES[:4]
            ]
        )
        services.close()
    assert rankings[0] == rankings[1]
    assert any(rankings[0])


def test_bm25_file_round_trip_keeps_added_rows(tmp_path: Path) -> None:
    tokenizer = FtsTokenizer()
    index = Bm25Index()
    index.add(np.array([5, 9]), tokenizer.tokenize_rows([("Asthma", "wheeze and cough"), (None, "cough, fever")]))
    index.write(tmp_path / "a.npz")
    index.add(np.array([12]), tokenizer.tokenize_rows([("COPD", "chronic cough")]))
    expected = index.search(["cough"], k=10)
    assert [cid for cid, _ in expected] == [9, 12, 5]  # one "cough" each: the shortest row ranks first
    index.write(tmp_path / "b.npz")
    assert read_bm25(tmp_path / "b.npz").search(["cough"], k=10) == expected
    assert read_bm25(tmp_path / "a.npz").size == 2
    (tmp_path / "c.npz").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a lexical index file"):
        read_bm25(tmp_path / "c.npz")


def test_rows_added_after_a_filtered_search_can_be_excluded_too() -> None:
    # The id -> row lookup is built by the first search that excludes ids, then extended by later adds.
    tokenizer = FtsTokenizer()
    index = Bm25Index()
    index.add(np.array([3, 4]), tokenizer.tokenize_rows([(None, "cough"), (None, "cough fever")]))
    assert [cid for cid, _ in index.search(["cough"], k=5, exclude_ids=np.array([4]))] == [3]
    index.add(np.array([900]), tokenizer.tokenize_rows([(None, "cough cough")]))
    assert [cid for cid, _ in index.search(["cough"], k=5, exclude_ids=np.array([900, 3]))] == [4]
    assert [cid for cid, _ in index.search(["cough"], k=5)] == [900, 3, 4]
