"""In-memory lexical replica vs the SQL full-text index on a MedQuAD base: latency and agreement.

    python tests/bench/lexical_replica.py DATA_DIR [--questions 500] [--depth 100]

DATA_DIR holds a base built from MedQuAD (`kbservice bench ingest`, or `kbservice ingest guidelines` of the
file `eval retrieval` reads). For each sampled MedQuAD question, both rankers return the retriever's
candidate depth at the head version; reports p50/p95 latency of each, and how many questions got the same
ids in the same order with scores equal to 1e-9 (FTS5 orders exact ties arbitrarily: compared as sets).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from kbservice.config import load_settings
from kbservice.services import build_services

MEDQUAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "medquad" / "medquad_answered.jsonl"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[int(share * (len(ordered) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir)
    services = build_services(settings)
    with MEDQUAD.open(encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for line in handle]
    questions = random.Random(args.seed).sample(questions, args.questions)
    version = services.store.head().version
    replica = services.replica
    replica.lexical_search("warm up", k=args.depth, version=version)
    services.store.lexical_search("warm up", version=version, limit=args.depth)
    memory_ms, sql_ms, same, fallbacks = [], [], 0, 0
    for question in questions:
        started = time.perf_counter()
        memory = replica.lexical_search(question, k=args.depth, version=version)
        memory_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        sql = services.store.lexical_search(question, version=version, limit=args.depth)
        sql_ms.append((time.perf_counter() - started) * 1000)
        if memory is None:
            fallbacks += 1
            continue
        sql_sorted = sorted(sql, key=lambda pair: (-pair[1], pair[0]))
        boundary = sql_sorted[-1][1] if len(sql_sorted) == args.depth else None
        # Rows tied with the last SQL row may be cut differently by LIMIT: compare the rows above it.
        strict = [pair for pair in sql_sorted if boundary is None or pair[1] > boundary + 1e-9]
        head = memory[: len(strict)]
        same += len(head) == len(strict) and all(
            mine[0] == theirs[0] and abs(mine[1] - theirs[1]) <= 1e-9 for mine, theirs in zip(head, strict, strict=True)
        )
    print(
        json.dumps(
            {
                "questions": len(questions),
                "chunks": replica.index.size,
                "depth": args.depth,
                "replica_ms": {
                    "p50": round(statistics.median(memory_ms), 2),
                    "p95": round(percentile(memory_ms, 0.95), 2),
                },
                "sql_fts_ms": {"p50": round(statistics.median(sql_ms), 2), "p95": round(percentile(sql_ms, 0.95), 2)},
                "same_ranking": same,
                "fell_back_to_sql": fallbacks,
            },
            indent=2,
        )
    )
    services.close()


if __name__ == "__main__":
    main()
