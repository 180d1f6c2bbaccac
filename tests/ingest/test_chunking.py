from __future__ import annotations

import itertools

import pytest

from kbservice.ingest.chunking import chunk_document, split_sections


def words(texts):  # type: ignore[no-untyped-def]
    return [len(t.split()) for t in texts]


DOC = """# Pneumonia
Intro sentence one. Intro two here.
## Diagnosis
Chest X-ray shows consolidation. CURB-65 guides site of care. Sputum culture in moderate disease.
### Tests
Blood cultures in severe disease.
## Treatment
- Amoxicillin 1 g three times daily.
- Doxycycline if allergic.
"""


def test_sections_carry_heading_paths() -> None:
    paths = [s.heading_path for s in split_sections(DOC)]
    assert paths == [
        ("Pneumonia",),
        ("Pneumonia", "Diagnosis"),
        ("Pneumonia", "Diagnosis", "Tests"),
        ("Pneumonia", "Treatment"),
    ]


def test_chunks_keep_offsets_headings_and_budget() -> None:
    drafts = chunk_document(text=DOC, title="CAP", count_tokens=words, max_tokens=16, overlap_tokens=4)
    assert drafts, "no chunks"
    for draft in drafts:
        assert DOC[draft.char_start : draft.char_end] == draft.text
        assert draft.token_count <= 16
        assert draft.context.startswith("CAP > Pneumonia")
    assert {d.heading_path for d in drafts} >= {("Pneumonia", "Treatment"), ("Pneumonia", "Diagnosis", "Tests")}
    assert [d.ordinal for d in drafts] == list(range(len(drafts)))


def test_consecutive_chunks_overlap_within_a_section() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    drafts = chunk_document(text=text, title="T", count_tokens=words, max_tokens=40, overlap_tokens=10)
    assert len(drafts) > 3
    for previous, current in itertools.pairwise(drafts):
        assert current.char_start < previous.char_end, "no overlap between consecutive chunks"
        assert current.char_start > previous.char_start


def test_a_sentence_longer_than_the_budget_is_split_at_words() -> None:
    text = "word " * 500
    drafts = chunk_document(text=text.strip(), title="T", count_tokens=words, max_tokens=64, overlap_tokens=8)
    assert len(drafts) >= 8
    assert all(d.token_count <= 64 for d in drafts)
    covered = set()
    for d in drafts:
        covered.update(range(d.char_start, d.char_end))
    stripped = text.strip()
    assert all(i in covered for i, ch in enumerate(stripped) if not ch.isspace()), "text lost between pieces"


@pytest.mark.parametrize("overlap", [0, 8])
def test_real_tokenizer_budget(overlap: int) -> None:
    from kbservice.index.embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    text = "Metformin is first line for type 2 diabetes mellitus, titrated to reduce gastrointestinal upset. " * 60
    drafts = chunk_document(
        text=text, title="Diabetes", count_tokens=embedder.count_tokens, max_tokens=128, overlap_tokens=overlap
    )
    for d in drafts:
        real = len(embedder.tokenizer(d.embed_text, verbose=False)["input_ids"])
        assert real <= 128, (real, d.token_count)
