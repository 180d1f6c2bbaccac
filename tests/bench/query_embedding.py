"""Single-query embedding latency per embedder backend: what one search pays before it can search.

    python tests/bench/query_embedding.py DATA_DIR [--questions 300]

Encodes MedQuAD questions one at a time (as a search does) with torch, the ONNX int8 export and the ONNX fp32
export (made once into DATA_DIR's model cache), after a warm-up; prints p50/p95 in ms as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from kbservice.config import EmbedderSettings, load_settings
from kbservice.services import build_services

MEDQUAD = Path(__file__).resolve().parents[3] / "shared" / "data" / "medquad" / "medquad_answered.jsonl"
BACKENDS = (("torch", "int8"), ("onnx", "int8"), ("onnx", "fp32"))  # torch ignores the precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    with MEDQUAD.open(encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for line in handle]
    questions = random.Random(args.seed).sample(questions, args.questions)
    results = {}
    for backend, precision in BACKENDS:
        settings = load_settings(data_dir=args.data_dir)
        settings.embedder = EmbedderSettings(backend=backend, onnx_precision=precision)
        embedder = build_services(settings).embedder
        embedder.encode(["warm up"])
        latencies = []
        for question in questions:
            started = time.perf_counter()
            embedder.encode([question])
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        name = backend if backend == "torch" else f"onnx-{precision}"
        results[name] = {
            "p50_ms": round(statistics.median(latencies), 2),
            "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
        }
    print(json.dumps({"questions": len(questions), "embedders": results}, indent=2))


if __name__ == "__main__":
    main()
