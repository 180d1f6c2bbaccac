"""Hybrid search with the lexical ranking on a pool thread (as served) vs inline, interleaved query by query.

    python tests/bench/hybrid_lexical_thread.py DATA_DIR [--questions 400]

DATA_DIR holds a MedQuAD base (for example one built by `kbservice bench ingest`). Each question is searched
both ways, in alternating order, after a warm-up; prints p50 / p95 in ms per way. The answers are the same
either way (tests/test_retrieve.py); only where the BM25 ranking runs differs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from kbservice.config import load_settings
from kbservice.services import build_services

MEDQUAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "medquad" / "medquad_answered.jsonl"


class _Inline:
    """Stands in for the retriever's pool: runs the lexical ranking at once, on the calling thread."""

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Future:
        done: Future = Future()
        done.set_result(fn(*args, **kwargs))
        return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    retriever = build_services(load_settings(data_dir=args.data_dir)).retriever
    with MEDQUAD.open(encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for line in handle]
    questions = random.Random(args.seed).sample(questions, args.questions)
    ways = {"pool_thread": retriever._lexical_pool, "inline": _Inline()}
    for question in questions[:20]:  # warm-up
        retriever.search(question, k=10)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for number, question in enumerate(questions):
        for name in sorted(ways, reverse=bool(number % 2)):
            retriever._lexical_pool = ways[name]
            retriever._last_query = None  # embed every time, as a new query would
            started = time.perf_counter()
            retriever.search(question, k=10)
            times[name].append((time.perf_counter() - started) * 1000)
    print(
        json.dumps(
            {
                name: {
                    "p50_ms": round(statistics.median(values), 2),
                    "p95_ms": round(sorted(values)[int(0.95 * (len(values) - 1))], 2),
                }
                for name, values in times.items()
            }
        )
    )


if __name__ == "__main__":
    main()
