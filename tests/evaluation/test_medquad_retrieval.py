"""Retrieval quality on a slice of real data (MedQuAD); skipped when ../shared/data is absent.

The full 16,407-answer evaluation is `kbservice bench ingest` + `kbservice eval retrieval` (see README).
"""

from __future__ import annotations

import pytest

from kbservice.services import Services
from tests.conftest import SHARED_DATA

MEDQUAD = SHARED_DATA / "medquad" / "medquad_answered.jsonl"
pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.slow,
    pytest.mark.skipif(not MEDQUAD.exists(), reason="../shared/data/medquad not present"),
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_medquad_slice_questions_find_their_answers(services: Services, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import random

    from kbservice.evaluation.medquad import medquad_documents, write_jsonl
    from tests.helpers import ingest

    # NINDS answers are the shortest (about 650 characters), so a slice of 400 stays fast.
    rows = [json.loads(line) for line in MEDQUAD.open(encoding="utf-8")]
    start = next(i for i, row in enumerate(rows) if row["source"] == "NINDS")
    records = medquad_documents(MEDQUAD, limit=start + 400)[start:]
    ingest(services, write_jsonl(records, tmp_path), source="medquad")
    questions = random.Random(1).sample(records, 60)
    found_at_10 = {"dense": 0, "lexical": 0, "hybrid": 0}
    texts = {}
    for record in records:
        texts.setdefault(record["text"], set()).add(record["id"])
    for record in questions:
        question = rows[int(record["id"][1:])]["question"]
        for mode in found_at_10:
            hits = services.retriever.search(question, k=30, mode=mode).hits
            doc_texts = []
            for hit in hits:
                doc = services.store.document(hit.document_id)
                if doc.source_key not in doc_texts:
                    doc_texts.append(doc.source_key)
            wanted = {f"medquad:medquad.jsonl#{i}" for i in texts[record["text"]]}
            found_at_10[mode] += any(key in wanted for key in doc_texts[:10])
    recall = {mode: hits / len(questions) for mode, hits in found_at_10.items()}
    # Floors well below what the full evaluation measures; they catch a broken ranker, not a 1% drift.
    assert recall["hybrid"] >= 0.85, recall
    assert recall["dense"] >= 0.75, recall
    assert recall["lexical"] >= 0.6, recall
    assert recall["hybrid"] >= max(recall["dense"], recall["lexical"]) - 0.05, recall
