"""A sentence-transformers model exported once to ONNX (optionally int8-quantised) into the model cache.

The exported graph is the whole sentence-transformers pipeline (transformer, pooling, normalisation) traced
from the model's own modules, so any local sentence-transformers directory exports the same way and its
pooling needs no copy here. (sentence-transformers' `backend="onnx"` needs optimum-onnx, which pins
transformers below the 5.x this project runs on; torch's exporter plus ONNX Runtime's quantiser are the same
parts it would use underneath.) An export is checked against the torch model before it is published, and its
file checksum becomes part of the embedder id: a base built by one export is refused by another.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from kbservice.checksums import file_sha256, unchanged_file_sha256, unchanged_model_fingerprint
from kbservice.durable_files import staged_directory
from kbservice.errors import KBError

OnnxPrecision = Literal["fp32", "int8"]
EXPORT_RECORD = "kbservice-export.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
OUTPUT_NAME = "sentence_embedding"
log = logging.getLogger(__name__)
_TOKENIZER_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what the graph can take
# Export checks: fp32 must reproduce torch to float rounding; int8 must stay close in direction (per-channel
# dynamic quantisation of all-MiniLM-L6-v2 measures a mean cosine of 0.99 to the fp32 vectors).
_FP32_MAX_ABS_DIFFERENCE = 1e-4
_INT8_MIN_MEAN_COSINE = 0.97
_CHECK_TEXTS = (
    "A 67-year-old with fever, productive cough and right lower lobe crackles.",
    "No pneumothorax or pleural effusion; heart size normal.",
    "Community-acquired pneumonia: amoxicillin 1 g three times daily for five days in adults without "
    "comorbidities; add a macrolide when atypical pathogens are suspected. Reassess after 48 to 72 hours.",
    "itching, skin rash and nodal skin eruptions",
    "Hypertension",
)


@dataclass(frozen=True)
class OnnxExport:
    """A published export: the folder, its graph's checksum and what it needs to tokenise like the source."""

    directory: Path
    precision: OnnxPrecision
    sha256: str
    source_name: str
    source_fingerprint: str
    dimension: int
    max_tokens: int
    input_names: tuple[str, ...]
    pad_token: str

    @property
    def model_file(self) -> Path:
        return self.directory / MODEL_FILE

    @property
    def tokenizer_file(self) -> Path:
        return self.directory / TOKENIZER_FILE


def ensure_onnx_export(model_dir: Path, *, cache_dir: Path, precision: OnnxPrecision) -> OnnxExport:
    """The export of `model_dir` at `precision` under `cache_dir`, made on first use (a few seconds)."""
    if not model_dir.is_dir():
        raise KBError(f"embedding model directory {model_dir} does not exist (embedder.model_path)")
    fingerprint = unchanged_model_fingerprint(model_dir)
    name = model_dir.name if model_dir.name != "model" else model_dir.parent.name
    destination = cache_dir / f"{name}-{fingerprint[:12]}-onnx-{precision}"
    if not (destination / EXPORT_RECORD).exists():
        _export(model_dir, destination, precision=precision, name=name, fingerprint=fingerprint)
    return read_export(destination)


def read_export(directory: Path) -> OnnxExport:
    """A published export, its graph checked against the checksum recorded when it was made."""
    try:
        record = json.loads((directory / EXPORT_RECORD).read_text())
    except (OSError, ValueError) as exc:
        raise KBError(f"{directory} is not a kbservice ONNX export ({exc})") from exc
    # The tokenizer is checked too: another vocabulary would change every vector under the same id.
    for file, recorded in ((MODEL_FILE, record["sha256"]), (TOKENIZER_FILE, record["tokenizer_sha256"])):
        actual = unchanged_file_sha256(directory / file)
        if actual != recorded:
            raise KBError(
                f"the ONNX export {directory / file} does not match its recorded checksum "
                f"({actual[:12]} != {recorded[:12]}); delete {directory} to export again"
            )
    return OnnxExport(
        directory=directory,
        precision=record["precision"],
        sha256=record["sha256"],
        source_name=record["source_name"],
        source_fingerprint=record["source_fingerprint"],
        dimension=int(record["dimension"]),
        max_tokens=int(record["max_tokens"]),
        input_names=tuple(record["input_names"]),
        pad_token=record["pad_token"],
    )


def _export(model_dir: Path, destination: Path, *, precision: OnnxPrecision, name: str, fingerprint: str) -> None:
    import torch

    from kbservice.index.embedder import load_sentence_transformer

    log.info("exporting the embedding model %s to ONNX (%s), once, into %s", name, precision, destination)
    model = load_sentence_transformer(model_dir)
    tokenizer = model.tokenizer
    input_names = tuple(n for n in tokenizer.model_input_names if n in _TOKENIZER_OUTPUTS)
    with staged_directory(destination, complete_marker=EXPORT_RECORD) as staging:
        sample = tokenizer(list(_CHECK_TEXTS), padding=True, truncation=True, return_tensors="pt")
        traced = staging / "model.fp32.onnx"
        # The tracer warns about every Python branch it freezes (padding checks in transformers' masks and
        # the pooling); the frozen graph is checked against the torch model below, so those warnings only
        # alarm the person running their first command.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _positional(model, input_names),
                tuple(sample[n] for n in input_names),
                str(traced),
                input_names=list(input_names),
                output_names=[OUTPUT_NAME],
                dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in input_names}, OUTPUT_NAME: {0: "batch"}},
                opset_version=17,
                dynamo=False,  # the tracing exporter: deterministic bytes, so every replica exports one graph
            )
            reference = model.encode(list(_CHECK_TEXTS), normalize_embeddings=True, convert_to_numpy=True)
        final = staging / MODEL_FILE
        if precision == "int8":
            _quantise(traced, final)
            traced.unlink()
        else:
            traced.rename(final)
        check = _check(final, {n: sample[n].numpy() for n in input_names}, reference, precision)
        tokenizer.backend_tokenizer.save(str(staging / TOKENIZER_FILE))
        record = {
            "source": str(model_dir),
            "source_name": name,
            "source_fingerprint": fingerprint,
            "precision": precision,
            "sha256": file_sha256(final),
            "tokenizer_sha256": file_sha256(staging / TOKENIZER_FILE),
            "dimension": int(reference.shape[1]),
            "max_tokens": int(model.max_seq_length),
            "input_names": list(input_names),
            "pad_token": tokenizer.pad_token,
            "torch": torch.__version__,
            "check": check,
        }
        (staging / EXPORT_RECORD).write_text(json.dumps(record, indent=2))


def _quantise(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weights: per-tensor int8 measured a mean cosine of 0.95 to fp32 on all-MiniLM-L6-v2, 0.99 here.
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)


def _check(model_file: Path, inputs: dict[str, np.ndarray], reference: np.ndarray, precision: str) -> dict:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    produced = session.run(None, {n: v.astype(np.int64) for n, v in inputs.items()})[0]
    produced = produced / np.linalg.norm(produced, axis=1, keepdims=True)
    max_difference = float(np.abs(produced - reference).max())
    mean_cosine = float((produced * reference).sum(axis=1).mean())
    if precision == "fp32" and max_difference > _FP32_MAX_ABS_DIFFERENCE:
        raise KBError(f"the ONNX export differs from the torch model by {max_difference:.2e}; export refused")
    if precision == "int8" and mean_cosine < _INT8_MIN_MEAN_COSINE:
        raise KBError(f"the int8 export's mean cosine to the torch model is {mean_cosine:.3f}; export refused")
    return {"texts": len(reference), "max_abs_difference": max_difference, "mean_cosine": mean_cosine}


def _positional(model, input_names: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """The pipeline as a module of positional tensors returning `sentence_embedding`: what the tracer exports."""
    import torch

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors):  # type: ignore[no-untyped-def]
            return self.model(dict(zip(input_names, tensors, strict=True)))["sentence_embedding"]

    return SentenceEmbedding()
