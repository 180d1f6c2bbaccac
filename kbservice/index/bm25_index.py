"""An in-memory BM25 index that ranks exactly like SQLite FTS5's bm25() over the same tokens.

Per query phrase i (an OR query: a row matches if it holds any phrase), FTS5 scores a row as

    sum_i idf_i * (f_i * (k1 + 1)) / (f_i + k1 * (1 - b + b * D / avgdl)),   k1 = 1.2, b = 0.75

where f_i is the phrase's weighted frequency in the row (each occurrence counts its column's weight), D the
row's token count over all columns, avgdl the mean of D over every row, and
idf_i = log((N - n_i + 0.5) / (n_i + 0.5)) over all N rows (n_i rows hold the phrase), floored at 1e-6.
Statistics cover every row, valid or not; validity only filters the result, as the SQL query's WHERE does.

Postings live in CSR arrays (a term's row positions and weighted frequencies) plus, per term, what was
added since; `write` merges them into one CSR file and `read` maps it back.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from kbservice.index.fts_tokens import TokenizedRows

K1 = 1.2
B = 0.75
_IDF_FLOOR = 1e-6


class Bm25Index:
    kind = "bm25"

    def __init__(self) -> None:
        # Row position -> chunk id, and -> tokens over all columns: the first `_rows` entries of buffers that
        # grow by doubling, so an ingest into a large index does not copy every row's entry.
        self._rows = 0
        self._id_buffer = np.zeros(0, dtype=np.int64)
        self._length_buffer = np.zeros(0, dtype=np.float64)
        self._total_tokens = 0.0
        self._base_terms: dict[str, int] = {}
        self._base_indptr = np.zeros(1, dtype=np.int64)
        self._base_rows = np.zeros(0, dtype=np.int32)
        self._base_freq = np.zeros(0, dtype=np.float32)
        self._added: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._position_of_id: np.ndarray | None = None  # chunk id -> row position (-1: absent); built lazily

    @property
    def size(self) -> int:
        return self._rows

    @property
    def _ids(self) -> np.ndarray:
        return self._id_buffer[: self._rows]

    @property
    def _lengths(self) -> np.ndarray:
        return self._length_buffer[: self._rows]

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def add(self, ids: np.ndarray, tokens: TokenizedRows) -> None:
        """Appends rows: chunk `ids[r]` holds the tokens of `tokens`' row r."""
        if len(ids) != len(tokens.lengths):
            raise ValueError(f"{len(ids)} ids for {len(tokens.lengths)} tokenized rows")
        first = self.size
        self._id_buffer = _with_room(self._id_buffer, first, len(ids))
        self._length_buffer = _with_room(self._length_buffer, first, len(ids))
        self._id_buffer[first : first + len(ids)] = ids
        self._length_buffer[first : first + len(ids)] = tokens.lengths
        self._rows += len(ids)
        self._total_tokens += float(tokens.lengths.sum())
        if self._position_of_id is not None and len(ids):
            new_ids = np.asarray(ids, dtype=np.int64)
            lookup = self._position_of_id
            if int(new_ids.max()) >= len(lookup):
                grown = np.full(max(2 * len(lookup), int(new_ids.max()) + 1), -1, dtype=np.int64)
                grown[: len(lookup)] = lookup
                lookup = grown
            lookup[new_ids] = np.arange(first, first + len(ids))
            self._position_of_id = lookup
        order = np.argsort(tokens.term_of, kind="stable")
        term_of = tokens.term_of[order]
        rows = (tokens.row_of[order] + first).astype(np.int32)
        freq = tokens.freq[order].astype(np.float32)  # column weights are halves: float32 holds them exactly
        bounds = np.searchsorted(term_of, np.arange(len(tokens.terms) + 1))
        for number, term in enumerate(tokens.terms):
            start, end = bounds[number], bounds[number + 1]
            if end > start:
                self._added.setdefault(term, []).append((rows[start:end], freq[start:end]))

    def _postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        number = self._base_terms.get(term)
        if number is not None:
            start, end = self._base_indptr[number], self._base_indptr[number + 1]
            parts.append((self._base_rows[start:end], self._base_freq[start:end]))
        added = self._added.get(term)
        if added:
            if len(added) > 1:  # merged once, on first use, so later queries find one array
                added[:] = [(np.concatenate([r for r, _ in added]), np.concatenate([f for _, f in added]))]
            parts.append(added[0])
        if not parts:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([r for r, _ in parts]), np.concatenate([f for _, f in parts])

    def _positions(self, chunk_ids: np.ndarray) -> np.ndarray:
        if self._position_of_id is None:
            lookup = np.full(int(self._ids.max()) + 1 if self.size else 0, -1, dtype=np.int64)
            lookup[self._ids] = np.arange(self.size)
            self._position_of_id = lookup
        chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
        known = chunk_ids[(chunk_ids >= 0) & (chunk_ids < len(self._position_of_id))]
        positions = self._position_of_id[known]
        return positions[positions >= 0]

    def search(self, phrases: list[str], *, k: int, exclude_ids: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The best `k` (chunk id, bm25 score; higher is better) for an OR of one-token `phrases`, each
        counted as often as it is listed (as FTS5 counts repeated phrases), never any of `exclude_ids`."""
        if not self.size or not phrases or k <= 0:
            return []
        rows_total = self.size
        average_length = self._total_tokens / rows_total
        scores = np.zeros(rows_total, dtype=np.float64)
        matched = np.zeros(rows_total, dtype=bool)
        for phrase in phrases:
            rows, freq = self._postings(phrase)
            if not len(rows):
                continue
            idf = math.log((rows_total - len(rows) + 0.5) / (len(rows) + 0.5))
            if idf <= 0.0:
                idf = _IDF_FLOOR
            f = freq.astype(np.float64)
            # The same operations in the same order as FTS5's C code, so the doubles agree.
            scores[rows] += idf * ((f * (K1 + 1.0)) / (f + K1 * (1 - B + B * self._lengths[rows] / average_length)))
            matched[rows] = True
        if exclude_ids is not None and len(exclude_ids):
            matched[self._positions(exclude_ids)] = False
        candidates = np.flatnonzero(matched)
        if len(candidates) > k:
            # Keep every row tied with the k-th best, then order by (score desc, chunk id asc).
            threshold = -np.partition(-scores[candidates], k - 1)[k - 1]
            candidates = candidates[scores[candidates] >= threshold]
        order = np.lexsort((self._ids[candidates], -scores[candidates]))[:k]
        best = candidates[order]
        return [(int(chunk_id), float(score)) for chunk_id, score in zip(self._ids[best], scores[best], strict=True)]

    # ----- files ------------------------------------------------------------------------------------

    def _merged_csr(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        terms = sorted(set(self._base_terms) | set(self._added))
        indptr = np.zeros(len(terms) + 1, dtype=np.int64)
        rows_parts, freq_parts = [], []
        for number, term in enumerate(terms):
            rows, freq = self._postings(term)
            rows_parts.append(rows)
            freq_parts.append(freq)
            indptr[number + 1] = indptr[number] + len(rows)
        rows = np.concatenate(rows_parts) if rows_parts else np.zeros(0, dtype=np.int32)
        freq = np.concatenate(freq_parts) if freq_parts else np.zeros(0, dtype=np.float32)
        return terms, indptr, rows.astype(np.int32), freq.astype(np.float32)

    def write(self, path: Path) -> None:
        """One .npz file (uncompressed: loading maps arrays straight in); also folds added postings into
        the base arrays, so memory holds one copy."""
        terms, indptr, rows, freq = self._merged_csr()
        term_bytes, term_ends = pack_terms(terms)
        with path.open("wb") as handle:
            np.savez(
                handle,
                ids=self._ids,
                lengths=self._lengths.astype(np.int64),
                term_bytes=term_bytes,
                term_ends=term_ends,
                indptr=indptr,
                rows=rows,
                freq=freq,
            )
        self._set_base(terms, indptr, rows, freq)

    def _set_base(self, terms: list[str], indptr: np.ndarray, rows: np.ndarray, freq: np.ndarray) -> None:
        self._base_terms = {term: number for number, term in enumerate(terms)}
        self._base_indptr, self._base_rows, self._base_freq = indptr, rows, freq
        self._added = {}


def _with_room(buffer: np.ndarray, used: int, more: int) -> np.ndarray:
    """`buffer` if it has room for `more` entries after `used`, else a copy of its used part with double room."""
    if used + more <= len(buffer):
        return buffer
    grown = np.zeros(max(2 * len(buffer), used + more), dtype=buffer.dtype)
    grown[:used] = buffer[:used]
    return grown


def pack_terms(terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings as one UTF-8 byte array and their end offsets: numpy files without pickled objects."""
    encoded = [term.encode("utf-8") for term in terms]
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), np.cumsum([len(t) for t in encoded], dtype=np.int64)


def unpack_terms(term_bytes: np.ndarray, term_ends: np.ndarray) -> list[str]:
    blob = term_bytes.tobytes()
    starts = np.concatenate([[0], term_ends[:-1]]).astype(np.int64) if len(term_ends) else []
    return [blob[start:end].decode("utf-8") for start, end in zip(starts, term_ends, strict=True)]


def read_bm25(path: Path) -> Bm25Index:
    """The index `write` stored at `path`; ValueError when the file is not one."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:  # ValueError: numpy's "pickled data"
        raise ValueError(f"not a lexical index file ({exc})") from exc
    required = {"ids", "lengths", "term_bytes", "term_ends", "indptr", "rows", "freq"}
    if not required <= set(arrays):
        raise ValueError(f"lexical index file lacks {sorted(required - set(arrays))}")
    terms = unpack_terms(arrays["term_bytes"], arrays["term_ends"])
    if len(arrays["indptr"]) != len(terms) + 1 or arrays["indptr"][-1] != len(arrays["rows"]):
        raise ValueError("lexical index file is inconsistent (term pointers do not match the postings)")
    index = Bm25Index()
    index._id_buffer = arrays["ids"].astype(np.int64)
    index._length_buffer = arrays["lengths"].astype(np.float64)
    index._rows = len(index._id_buffer)
    index._total_tokens = float(arrays["lengths"].sum())
    index._set_base(terms, arrays["indptr"], arrays["rows"], arrays["freq"])
    return index
