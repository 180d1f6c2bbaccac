"""Embedder on ONNX Runtime: the same sentence-transformers model, exported once (index/onnx_export.py).

Texts are tokenised with the source model's own tokenizer file (the Rust `tokenizers` library, no torch),
sorted by token count so each batch pads to its own longest text, and run through one InferenceSession
per process. The fp32 graph is the default embedder: the README's "Embedding backends" has the measurements
that chose it (torch's vectors, as fast on chunks, a query 2.5x as fast, no torch import). The embedder
id names the source weights and the exported graph's checksum, so a knowledge base built on torch, on fp32
ONNX or on int8 ONNX is refused by the others until it is re-embedded.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np

from kbservice.devices import AUTO
from kbservice.index.embedder import encode_in_groups
from kbservice.index.onnx_export import OUTPUT_NAME, OnnxExport
from kbservice.index.protocols import ProgressCallback


@functools.cache
def _session(model_file: str, provider: str):  # type: ignore[no-untyped-def]
    """One session per (graph, provider) per process: services built side by side share it."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ONNX Runtime ignores OMP_NUM_THREADS, which `serve --workers N` sets to share the cores among workers.
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    # Its threads would otherwise spin for a while after every run, on the cores that the language model's
    # torch threads (a recommendation embeds its query, then scores) and a busy server's other requests need
    # next. Waking them instead costs a query about 0.3 ms (MiniLM fp32 p50 5.2 -> 5.5 ms here).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The CPU stays listed after CUDA: onnxruntime-gpu on a machine without a usable GPU falls back to it.
    providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    return onnxruntime.InferenceSession(model_file, options, providers=providers)


@functools.cache
def _tokenizers(tokenizer_file: str, export_sha256: str, max_tokens: int):  # type: ignore[no-untyped-def]
    """Two tokenizers per export per process (loading one takes 16 ms, and services are built often): one
    truncating like the model (what it embeds), one counting whole texts (chunking). Both are only read
    after this, which the Rust tokenizers allow from many threads at once. Keyed by the export's checksum
    too, so an export made again in the same folder is read again."""
    from tokenizers import Tokenizer

    truncating = Tokenizer.from_file(tokenizer_file)
    truncating.enable_truncation(max_length=max_tokens)
    truncating.no_padding()
    counting = Tokenizer.from_file(tokenizer_file)
    counting.no_truncation()
    counting.no_padding()
    return truncating, counting


def onnx_provider(device: str) -> str:
    """ONNX Runtime's execution provider for a configured device: "cuda", "cuda:N" and "auto" take CUDA when
    this ONNX Runtime has it (onnxruntime-gpu), else the CPU. "auto" is decided by ONNX Runtime itself, not
    by asking torch: a process that embeds on ONNX never imports torch (about a second of its start-up)."""
    import onnxruntime

    wants_cuda = device == AUTO or device.startswith("cuda")
    if wants_cuda and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return "CUDAExecutionProvider"
    return "CPUExecutionProvider"


class OnnxEmbedder:
    """Embeds with an exported sentence-transformers graph on ONNX Runtime."""

    def __init__(self, export: OnnxExport, *, batch_size: int = 64, device: str = "cpu") -> None:
        self.export = export
        # int8 graphs quantise each activation with a scale taken from the whole input tensor, so a text's
        # vector would depend on the texts batched (and padded) with it: a query would embed differently
        # alone than beside a concurrent one, and replay would drift. They run one text at a time (which
        # measured faster anyway: no padding); fp32 graphs batch.
        self.batch_size = 1 if export.precision == "int8" else batch_size
        self.dimension = export.dimension
        self.max_tokens = export.max_tokens
        self.embedder_id = (
            f"{export.source_name}@{export.source_fingerprint[:16]}"
            f"+onnx-{export.precision}@{export.sha256[:12]}/d{export.dimension}"
        )
        self._session = _session(str(export.model_file), onnx_provider(device))
        self._tokenizer, self._counter = _tokenizers(str(export.tokenizer_file), export.sha256, export.max_tokens)
        self._pad_id = self._tokenizer.token_to_id(export.pad_token) or 0

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in self._counter.encode_batch(list(texts), add_special_tokens=False)]

    def encode(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> np.ndarray:
        """Normalised float32 vectors, one row per text, in input order."""
        return encode_in_groups(texts, self.dimension, self._encode_group, progress)

    def _encode_group(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._run([encodings[i] for i in idx])
        return out

    def _run(self, encodings: list) -> np.ndarray:  # type: ignore[type-arg]
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = 1
            types[row, :n] = encoding.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        vectors = self._session.run([OUTPUT_NAME], {n: feeds[n] for n in self.export.input_names})[0]
        # Normalised here as the torch embedder does (a pipeline need not end in a Normalize module), which
        # also removes the int8 graphs' float drift: every vector has unit length as the index expects.
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
