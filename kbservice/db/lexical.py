"""Lexical (full-text) search SQL per dialect: FTS5 bm25 on SQLite, ts_rank on PostgreSQL."""

from __future__ import annotations

import re

from sqlalchemy import Connection, text

# The FTS5 table's tokenizer (migration 0002) and bm25() column weights (context, text): a document's title
# and section path count half as much as its body. The in-memory lexical replica ranks with the same two.
FTS_TOKENIZE = "porter unicode61"
COLUMN_WEIGHTS = (0.5, 1.0)

# Questions carry many function words; FTS5 has no stop list, and OR-ing them floods the ranking.
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "are",
        "is",
    ]
)

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def query_terms(query: str) -> list[str]:
    """Distinct lower-cased content words of `query`, in order; punctuation and operators are dropped."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        if word not in STOPWORDS and word not in seen:
            seen[word] = None
    return list(seen)


def lexical_search(
    connection: Connection, *, query: str, version: int, limit: int, kind: str | None = None
) -> list[tuple[int, float]]:
    """(chunk_id, score) best first, among chunks valid at `version` (of documents of `kind`, when given);
    higher score is better."""
    terms = query_terms(query)
    if not terms:
        return []
    kind_filter = "AND c.document_id IN (SELECT id FROM documents WHERE kind = :kind) " if kind else ""
    if connection.dialect.name == "sqlite":
        match = " OR ".join(f'"{term}"' for term in terms)
        rows = connection.execute(
            text(
                f"SELECT c.id, bm25(chunks_fts, {COLUMN_WEIGHTS[0]}, {COLUMN_WEIGHTS[1]}) AS rank FROM chunks_fts "
                "JOIN chunks c ON c.id = chunks_fts.rowid "
                "WHERE chunks_fts MATCH :match AND c.version_added <= :v "
                "AND (c.version_removed IS NULL OR c.version_removed > :v) "
                + kind_filter
                + "ORDER BY rank LIMIT :limit"
            ),
            {"match": match, "v": version, "limit": limit, "kind": kind},
        )
        # bm25() is lower-is-better; negate so every ranker reports higher-is-better.
        return [(int(chunk_id), -float(rank)) for chunk_id, rank in rows]
    tsquery = " | ".join(terms)
    rows = connection.execute(
        text(
            "SELECT c.id, ts_rank(c.search_tsv, q) AS rank "
            "FROM chunks c, to_tsquery('english', :tsquery) q "
            "WHERE c.search_tsv @@ q AND c.version_added <= :v "
            "AND (c.version_removed IS NULL OR c.version_removed > :v) "
            + kind_filter
            + "ORDER BY rank DESC, c.id LIMIT :limit"
        ),
        {"tsquery": tsquery, "v": version, "limit": limit, "kind": kind},
    )
    return [(int(chunk_id), float(rank)) for chunk_id, rank in rows]
