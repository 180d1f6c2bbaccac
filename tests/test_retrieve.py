"""Hybrid retrieval and as-of exactness on SQLite and PostgreSQL with the real embedder."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kbservice.errors import UnknownVersionError
from kbservice.retrieve import reciprocal_rank_fusion
from kbservice.services import Services
from tests.conftest import DEMO_GUIDELINES
from tests.helpers import guideline, ingest


def test_rrf_rewards_agreement() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], rrf_k=60)
    assert [item for item, _, _ in fused] == [1, 3, 2, 4]
    assert fused[0][2] == [1, 2]
    assert fused[-1][2] == [None, 3]


@pytest.fixture
def demo_services(services: Services) -> Services:
    ingest(services, DEMO_GUIDELINES, source="demo")
    return services


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_each_mode_finds_the_right_section(demo_services: Services, mode: str) -> None:
    result = demo_services.retriever.search("nitrofurantoin for cystitis in pregnancy", k=5, mode=mode)
    assert result.version == 1
    top = result.hits[0]
    assert top.title == "Lower urinary tract infection in adults"
    assert "pregnancy" in top.text.lower()
    assert top.heading_path[-1] == "Men and pregnancy"
    assert len(result.hits) == 5


def test_hybrid_hits_carry_both_ranks_and_document_fields(demo_services: Services) -> None:
    hits = demo_services.retriever.search("apixaban anticoagulation pulmonary embolism", k=10).hits
    assert hits[0].dense_rank is not None and hits[0].lexical_rank is not None
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len({h.chunk_id for h in hits}) == len(hits)
    doc_text = demo_services.store  # offsets point into the stored document text
    from sqlalchemy import select

    from kbservice.db.schema import documents

    with doc_text.engine.connect() as conn:
        stored = conn.execute(select(documents.c.text).where(documents.c.id == hits[0].document_id)).scalar_one()
    assert stored[hits[0].char_start : hits[0].char_end] == hits[0].text


def test_hybrid_fuses_the_dense_and_lexical_rankings_under_concurrent_searches(demo_services: Services) -> None:
    # The lexical ranking runs on a pool thread beside the query embedding: sixteen threads searching at once
    # (as HTTP workers do) must each get exactly what one search alone gets, the RRF of its two rankings.
    retriever = demo_services.retriever
    queries = [
        "apixaban anticoagulation pulmonary embolism",
        "nitrofurantoin for cystitis in pregnancy",
        "community acquired pneumonia amoxicillin",
        "sepsis fluids lactate",
    ]
    alone = {}
    for query in queries:
        dense = [h.chunk_id for h in retriever.search(query, k=retriever.settings.candidates, mode="dense").hits]
        lexical = [h.chunk_id for h in retriever.search(query, k=retriever.settings.candidates, mode="lexical").hits]
        fused = reciprocal_rank_fusion([dense, lexical], rrf_k=retriever.settings.rrf_k)
        alone[query] = [h.chunk_id for h in retriever.search(query, k=5).hits]
        assert alone[query] == [item for item, _, _ in fused][:5]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda q: (q, [h.chunk_id for h in retriever.search(q, k=5).hits]), queries * 8))
    assert all(found == alone[query] for query, found in answers)


def test_as_of_returns_exactly_what_was_valid(services: Services, tmp_path: Path) -> None:
    v1_path = guideline(tmp_path, "cap.md", "Pneumonia", "Amoxicillin is the first line antibiotic.")
    ingest(services, v1_path)  # v1
    guideline(tmp_path, "cap.md", "Pneumonia", "Doxycycline is the first line antibiotic.")
    ingest(services, v1_path)  # v2: supersedes
    ingest(services, guideline(tmp_path, "pe.md", "Embolism", "Apixaban anticoagulation."))  # v3
    pe = next(d for d in services.store.documents(as_of=3) if d.title == "Embolism")
    services.store.retract_document(pe.document_id, author="t", reason="r")  # v4

    def texts(version: int, mode: str) -> set[str]:
        hits = services.retriever.search("first line antibiotic anticoagulation", k=50, as_of=version, mode=mode).hits
        return {h.text for h in hits}

    for mode in ("dense", "lexical", "hybrid"):
        assert texts(1, mode) == {"Amoxicillin is the first line antibiotic."}
        assert texts(2, mode) == {"Doxycycline is the first line antibiotic."}
        assert texts(3, mode) == {"Doxycycline is the first line antibiotic.", "Apixaban anticoagulation."}
        assert texts(4, mode) == {"Doxycycline is the first line antibiotic."}
    with pytest.raises(UnknownVersionError, match="version 9 does not exist"):
        services.retriever.search("x", as_of=9)


def test_empty_knowledge_base_and_blank_query(services: Services) -> None:
    assert services.retriever.search("anything").hits == []
    assert services.retriever.search("anything").version is None


def test_lexical_query_with_only_operators_and_stopwords(demo_services: Services) -> None:
    assert demo_services.retriever.search('" OR AND NEAR( * the of', mode="lexical").hits == []
    hits = demo_services.retriever.search('"spirometry" OR (COPD)*', mode="lexical").hits
    assert hits and hits[0].title.startswith("Chronic obstructive")
