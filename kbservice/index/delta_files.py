"""Snapshot deltas: what one catch-up added to the replica (chunk ids, their vectors, their lexical tokens).

An ingest into a large base writes only its delta instead of rewriting the whole index; loading replays the
base's deltas in order. One uncompressed .npz per delta, no pickled objects.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kbservice.index.bm25_index import pack_terms, unpack_terms
from kbservice.index.fts_tokens import TokenizedRows


@dataclass(frozen=True)
class Delta:
    ids: np.ndarray  # int64
    vectors: np.ndarray  # float32, one row per id
    tokens: TokenizedRows | None  # None: written with the lexical replica off


def write_delta(path: Path, delta: Delta) -> None:
    arrays = {"ids": np.asarray(delta.ids, dtype=np.int64), "vectors": np.asarray(delta.vectors, dtype=np.float32)}
    if delta.tokens is not None:
        term_bytes, term_ends = pack_terms(delta.tokens.terms)
        arrays |= {
            "term_bytes": term_bytes,
            "term_ends": term_ends,
            "term_of": delta.tokens.term_of,
            "row_of": delta.tokens.row_of,
            "freq": delta.tokens.freq,
            "lengths": delta.tokens.lengths,
        }
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def read_delta(path: Path) -> Delta:
    """The delta at `path`; ValueError when the file is not one or disagrees with itself."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"not a snapshot delta file ({exc})") from exc
    if "ids" not in arrays or "vectors" not in arrays or len(arrays["ids"]) != len(arrays["vectors"]):
        raise ValueError("snapshot delta file lacks ids and vectors of one length")
    tokens = None
    if "term_bytes" in arrays:
        tokens = TokenizedRows(
            terms=unpack_terms(arrays["term_bytes"], arrays["term_ends"]),
            term_of=arrays["term_of"],
            row_of=arrays["row_of"],
            freq=arrays["freq"],
            lengths=arrays["lengths"],
        )
        if len(tokens.lengths) != len(arrays["ids"]):
            raise ValueError("snapshot delta file has lexical rows for a different number of chunks")
    return Delta(ids=arrays["ids"], vectors=arrays["vectors"], tokens=tokens)


def concatenate_tokens(parts: list[TokenizedRows]) -> TokenizedRows:
    """Several batches' tokens as one batch (rows renumbered in order, terms merged)."""
    terms: dict[str, int] = {}
    term_of, row_of, freq, lengths = [], [], [], []
    rows_before = 0
    for part in parts:
        mapping = np.array([terms.setdefault(term, len(terms)) for term in part.terms], dtype=np.int64)
        term_of.append(mapping[part.term_of] if len(part.term_of) else part.term_of)
        row_of.append(part.row_of + rows_before)
        freq.append(part.freq)
        lengths.append(part.lengths)
        rows_before += len(part.lengths)
    empty = np.zeros(0, dtype=np.int64)
    return TokenizedRows(
        terms=list(terms),
        term_of=np.concatenate(term_of) if term_of else empty,
        row_of=np.concatenate(row_of) if row_of else empty,
        freq=np.concatenate(freq) if freq else np.zeros(0),
        lengths=np.concatenate(lengths) if lengths else empty,
    )
