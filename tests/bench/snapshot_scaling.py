"""What a small ingest's snapshot costs as the base grows: a delta vs rewriting the whole index.

    python tests/bench/snapshot_scaling.py [--sizes 10000 1000000] [--added 30] [--reps 5]

For each base size, builds the index kbservice would hold (`index.kind = auto`: exact below 200k, PQ
fast-scan + exact re-rank above; synthetic unit vectors, 384-d) and a lexical (BM25) index of synthetic
chunk texts, writes it as a base snapshot, then times the snapshot step of an ingest that adds `--added`
chunks (about what 10 short guideline documents make): appending a delta (today's path) and rewriting the
whole snapshot (before deltas). Only the snapshot step: parsing, embedding and SQL do not depend on the
base's size. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from kbservice.config import IndexSettings
from kbservice.index.bm25_index import Bm25Index
from kbservice.index.delta_files import Delta
from kbservice.index.faiss_index import build_index
from kbservice.index.fts_tokens import FtsTokenizer, TokenizedRows
from kbservice.index.snapshot import append_delta, write_snapshot

DIMENSION = 384
WORDS = "fever cough dyspnoea amoxicillin apixaban metformin spirometry oedema ramipril wheeze pain rash".split()  # noqa: SIM905


def unit_vectors(count: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((count, DIMENSION), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def texts(count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    picks = rng.integers(0, len(WORDS), size=(count, 20))
    return [(f"Guideline {i}", " ".join(WORDS[w] for w in row) + f" item{i % 5000}") for i, row in enumerate(picks)]


def tokenize(tokenizer: FtsTokenizer, rows: list[tuple[str, str]], batch: int = 20_000) -> list[TokenizedRows]:
    return [tokenizer.tokenize_rows(rows[start : start + batch]) for start in range(0, len(rows), batch)]


def measure(size: int, added: int, reps: int, settings: IndexSettings) -> dict[str, float | int | str]:
    rng = np.random.default_rng(size)
    tokenizer = FtsTokenizer()
    kind = "flat" if size < settings.exact_below else settings.approximate_kind
    started = time.perf_counter()
    ids = np.arange(1, size + 1, dtype=np.int64)
    index = build_index(dimension=DIMENSION, kind=kind, settings=settings, ids=ids, vectors=unit_vectors(size, rng))
    lexical = Bm25Index()
    first = 0
    for part in tokenize(tokenizer, texts(size, rng)):
        rows = len(part.lengths)
        lexical.add(ids[first : first + rows], part)
        first += rows
    build_s = time.perf_counter() - started
    delta_s, whole_s = [], []
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        started = time.perf_counter()
        manifest = write_snapshot(index, directory, applied_seq=size, embedder_id="bench", lexical=lexical)
        base_write_s = time.perf_counter() - started
        next_id = size + 1
        for _ in range(reps):
            new_ids = np.arange(next_id, next_id + added, dtype=np.int64)
            next_id += added
            vectors = unit_vectors(added, rng)
            tokens = tokenizer.tokenize_rows(texts(added, rng))
            started = time.perf_counter()
            index.add(new_ids, vectors)
            lexical.add(new_ids, tokens)
            written = append_delta(
                directory, previous=manifest, delta=Delta(new_ids, vectors, tokens), applied_seq=int(new_ids[-1])
            )
            delta_s.append(time.perf_counter() - started)
            assert written is not None
            manifest = written
            started = time.perf_counter()
            manifest = write_snapshot(
                index, directory, applied_seq=int(new_ids[-1]), embedder_id="bench", lexical=lexical
            )
            whole_s.append(time.perf_counter() - started)
        snapshot_mb = sum(p.stat().st_size for p in directory.iterdir()) / 1e6
    return {
        "base_vectors": size,
        "kind": kind,
        "build_s": round(build_s, 1),
        "base_write_s": round(base_write_s, 2),
        "snapshot_mb": round(snapshot_mb, 1),
        "delta_ms_p50": round(statistics.median(delta_s) * 1000, 2),
        "whole_rewrite_ms_p50": round(statistics.median(whole_s) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--added", type=int, default=30)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    settings = IndexSettings()
    results = [measure(size, args.added, args.reps, settings) for size in args.sizes]
    small, large = results[0], results[-1]
    print(
        json.dumps(
            {
                "added_chunks": args.added,
                "results": results,
                "delta_ratio_largest_to_smallest": round(large["delta_ms_p50"] / small["delta_ms_p50"], 2),
                "whole_rewrite_ratio_largest_to_smallest": round(
                    large["whole_rewrite_ms_p50"] / small["whole_rewrite_ms_p50"], 1
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
