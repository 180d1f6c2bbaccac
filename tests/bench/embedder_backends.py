"""Encode throughput and agreement of the embedder backends on MedQuAD chunk texts, in one process.

    python tests/bench/embedder_backends.py [CHUNKS] [--reps N]

Bare torch `SentenceTransformer.encode` (the yardstick), the torch embedder, the fp32 ONNX export at batch
16 and the int8 export, each encoding the same chunks in turn, `--reps` rounds interleaved so other load
weighs on all alike; the best round of each is reported with its mean and minimum cosine to torch. Needs
../shared/data/medquad; the exports go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from kbservice.config import Settings
from kbservice.evaluation.medquad import MEDQUAD_FILE, MEDQUAD_SOURCE, medquad_documents, write_jsonl
from kbservice.index.embedder import SentenceTransformerEmbedder, packaged_model_dir
from kbservice.index.onnx_embedder import OnnxEmbedder
from kbservice.index.onnx_export import ensure_onnx_export
from kbservice.ingest.guidelines import chunk_documents
from kbservice.ingest.parsers import parse_file

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "medquad" / "medquad_answered.jsonl"


def chunk_texts(embedder: SentenceTransformerEmbedder, count: int, work: Path) -> list[str]:
    records = medquad_documents(CORPUS, limit=max(50, count // 2))
    docs = parse_file(write_jsonl(records, work), key=MEDQUAD_FILE, source=MEDQUAD_SOURCE, max_bytes=1 << 34)
    settings = Settings(data_dir=work)
    return [d.embed_text for drafts in chunk_documents(docs, embedder=embedder, settings=settings) for d in drafts][
        :count
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chunks", type=int, nargs="?", default=600)
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        torch_embedder = SentenceTransformerEmbedder(batch_size=16)
        texts = chunk_texts(torch_embedder, args.chunks, work)
        tokens = sum(min(n + 2, torch_embedder.max_tokens) for n in torch_embedder.count_tokens(texts))
        backends = {
            "torch": torch_embedder,
            "onnx-fp32": OnnxEmbedder(
                ensure_onnx_export(packaged_model_dir(), cache_dir=work, precision="fp32"), batch_size=16
            ),
            "onnx-int8": OnnxEmbedder(ensure_onnx_export(packaged_model_dir(), cache_dir=work, precision="int8")),
        }
        bare = torch_embedder.model
        bare.encode(texts[:64], batch_size=16)  # warm-up, untimed
        reference = torch_embedder.encode(texts)
        seconds: dict[str, list[float]] = {name: [] for name in ["bare", *backends]}
        cosines: dict[str, tuple[float, float]] = {}
        for _ in range(args.reps):
            clock = time.perf_counter()
            bare.encode(texts, batch_size=16, normalize_embeddings=True)
            seconds["bare"].append(time.perf_counter() - clock)
            for name, embedder in backends.items():
                clock = time.perf_counter()
                vectors = embedder.encode(texts)
                seconds[name].append(time.perf_counter() - clock)
                agreement = (vectors * reference).sum(axis=1)
                cosines[name] = (float(agreement.mean()), float(agreement.min()))
    bare_s = min(seconds["bare"])
    result = {
        "chunks": len(texts),
        "tokens": tokens,
        "backends": {
            name: {
                "seconds": round(min(values), 2),
                "tokens_per_s": round(tokens / min(values)),
                "vs_bare_torch": round(bare_s / min(values), 2),
                **(
                    {"mean_cosine": round(cosines[name][0], 4), "min_cosine": round(cosines[name][1], 4)}
                    if name in cosines
                    else {}
                ),
            }
            for name, values in seconds.items()
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
