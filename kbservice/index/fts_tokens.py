"""Tokens exactly as SQLite FTS5's `porter unicode61` tokenizer makes them, by asking FTS5 itself.

The in-memory lexical replica must rank like the SQL full-text index it stands in for, so it must see the
same terms: the same Unicode folding, the same word breaks, the same Porter stems. Re-implementing those
would drift in corner cases; an in-memory FTS5 table (Python's own sqlite3, no database involved) tokenizes
with the very code the SQL index uses, and its `fts5vocab` instance table hands back every token.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kbservice.db.lexical import COLUMN_WEIGHTS, FTS_TOKENIZE

_STEM_CACHE_LIMIT = 200_000  # distinct query words remembered; cleared when full (it only saves time)


@dataclass(frozen=True)
class TokenizedRows:
    """Weighted term frequencies of a batch of rows, as parallel posting arrays.

    `terms[term_of[i]]` occurs in row `row_of[i]` with weighted frequency `freq[i]` (each occurrence counts
    its column's weight, as FTS5's bm25() does); `lengths[r]` is row r's token count over all columns.
    """

    terms: list[str]
    term_of: np.ndarray  # int64, per posting
    row_of: np.ndarray  # int64, per posting
    freq: np.ndarray  # float64, per posting
    lengths: np.ndarray  # int64, per row


class FtsTokenizer:
    """One private in-memory FTS5 table; thread-safe (a lock), cheap to keep for the process's lifetime."""

    def __init__(self) -> None:
        self._connection = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        self._stems: dict[str, tuple[str, ...]] = {}
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._connection.executescript(
            "DROP TABLE IF EXISTS vocab; DROP TABLE IF EXISTS rows;"
            f"CREATE VIRTUAL TABLE rows USING fts5(context, text, tokenize={FTS_TOKENIZE!r});"
            "CREATE VIRTUAL TABLE vocab USING fts5vocab(rows, 'instance');"
        )

    def tokenize_rows(self, rows: Sequence[tuple[str | None, str]]) -> TokenizedRows:
        """Weighted term frequencies and token counts of (context, text) rows, in their order."""
        with self._lock:
            try:
                self._connection.executemany(
                    "INSERT INTO rows(rowid, context, text) VALUES (?, ?, ?)",
                    ((number, context or "", text) for number, (context, text) in enumerate(rows, start=1)),
                )
                found = self._connection.execute(
                    "SELECT term, doc, sum(CASE col WHEN 'context' THEN ? ELSE ? END), count(*) "
                    "FROM vocab GROUP BY term, doc",
                    COLUMN_WEIGHTS,
                ).fetchall()
            finally:
                self._reset()
        if not found:
            empty = np.zeros(0, dtype=np.int64)
            return TokenizedRows([], empty, empty, np.zeros(0), np.zeros(len(rows), dtype=np.int64))
        term_column, doc_column, weighted, counts = zip(*found, strict=True)
        terms, term_of = np.unique(np.array(term_column, dtype=object), return_inverse=True)
        row_of = np.asarray(doc_column, dtype=np.int64) - 1
        return TokenizedRows(
            terms=[str(term) for term in terms],
            term_of=term_of.astype(np.int64),
            row_of=row_of,
            freq=np.asarray(weighted, dtype=np.float64),
            lengths=np.bincount(row_of, weights=np.asarray(counts, dtype=np.float64), minlength=len(rows)).astype(
                np.int64
            ),
        )

    def stems(self, word: str) -> tuple[str, ...]:
        """The tokens FTS5 makes of `word` as a query phrase (usually one stem; none for pure separators)."""
        cached = self._stems.get(word)
        if cached is not None:
            return cached
        with self._lock:
            try:
                self._connection.execute("INSERT INTO rows(rowid, context, text) VALUES (1, '', ?)", (word,))
                tokens = tuple(term for (term,) in self._connection.execute("SELECT term FROM vocab ORDER BY offset"))
            finally:
                self._reset()
        if len(self._stems) >= _STEM_CACHE_LIMIT:
            self._stems.clear()
        self._stems[word] = tokens
        return tokens
