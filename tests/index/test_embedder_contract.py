"""The Embedder contract, run by every implementation: the packaged sentence-transformers model, a tiny
random one (any local model directory works through configuration), the query-batching wrapper, and the
ONNX Runtime exports of both models (fp32 and int8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kbservice.index.embedder import SentenceTransformerEmbedder, packaged_model_dir
from kbservice.index.onnx_embedder import OnnxEmbedder
from kbservice.index.onnx_export import ensure_onnx_export
from kbservice.index.protocols import Embedder
from kbservice.index.query_batching import BatchingEmbedder

TEXTS = [
    "Community-acquired pneumonia: amoxicillin for five days.",
    "Asthma: inhaled corticosteroids.",
    "a",
    "Pulmonary embolism is treated with anticoagulation; " * 60,  # longer than the model's window
]


class EmbedderContract:
    @pytest.fixture
    def embedder(self) -> Embedder:
        raise NotImplementedError

    def test_vectors_are_unit_float32_rows_in_input_order(self, embedder: Embedder) -> None:
        vectors = embedder.encode(TEXTS)
        assert vectors.shape == (len(TEXTS), embedder.dimension) and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        for i, text in enumerate(TEXTS):  # one at a time gives the same rows (padding aside)
            assert np.allclose(embedder.encode([text])[0], vectors[i], atol=1e-4)

    def test_no_texts_give_an_empty_matrix(self, embedder: Embedder) -> None:
        assert embedder.encode([]).shape == (0, embedder.dimension)
        assert embedder.count_tokens([]) == []

    def test_tokens_are_counted_without_truncation(self, embedder: Embedder) -> None:
        counts = embedder.count_tokens(TEXTS)
        assert len(counts) == len(TEXTS) and all(n > 0 for n in counts)
        assert counts[3] > embedder.max_tokens > counts[0] > counts[2]

    def test_progress_hears_every_text(self, embedder: Embedder) -> None:
        heard: list[int] = []
        embedder.encode(TEXTS, progress=heard.append)
        assert sum(heard) == len(TEXTS)

    def test_the_id_names_the_weights_and_the_dimension(self, embedder: Embedder) -> None:
        assert embedder.embedder_id.endswith(f"/d{embedder.dimension}") and "@" in embedder.embedder_id


class TestPackagedMiniLM(EmbedderContract):
    @pytest.fixture
    def embedder(self) -> Embedder:
        return SentenceTransformerEmbedder()

    def test_similar_texts_are_closer_than_unrelated_ones(self, embedder: Embedder) -> None:
        a, b, c = embedder.encode(["fever and productive cough", "pneumonia with cough and fever", "a broken wrist"])
        assert a @ b > a @ c


class TestLocalModelDirectory(EmbedderContract):
    @pytest.fixture
    def embedder(self, tiny_embedder_dir: Path) -> Embedder:
        return SentenceTransformerEmbedder(tiny_embedder_dir, batch_size=2)

    def test_another_model_has_another_id(self, embedder: Embedder) -> None:
        assert embedder.embedder_id != SentenceTransformerEmbedder().embedder_id


class TestQueryBatching(EmbedderContract):
    @pytest.fixture
    def embedder(self, tiny_embedder_dir: Path) -> Embedder:
        return BatchingEmbedder(SentenceTransformerEmbedder(tiny_embedder_dir))


class TestOnnxFp32(EmbedderContract):
    @pytest.fixture
    def embedder(self, onnx_export_dir: Path) -> Embedder:
        export = ensure_onnx_export(packaged_model_dir(), cache_dir=onnx_export_dir, precision="fp32")
        return OnnxEmbedder(export, batch_size=3)

    def test_it_reproduces_the_torch_model(self, embedder: Embedder) -> None:
        torch_vectors = SentenceTransformerEmbedder().encode(TEXTS)
        assert np.abs(embedder.encode(TEXTS) - torch_vectors).max() < 1e-5

    def test_it_counts_tokens_like_the_torch_model(self, embedder: Embedder) -> None:
        assert embedder.count_tokens(TEXTS) == SentenceTransformerEmbedder().count_tokens(TEXTS)
        assert embedder.max_tokens == SentenceTransformerEmbedder().max_tokens

    def test_the_id_names_the_export_beside_the_weights(self, embedder: Embedder) -> None:
        torch_id = SentenceTransformerEmbedder().embedder_id
        assert embedder.embedder_id != torch_id and "+onnx-fp32@" in embedder.embedder_id
        assert embedder.embedder_id.split("+")[0] == torch_id.split("/")[0]


class TestOnnxInt8(EmbedderContract):
    @pytest.fixture
    def embedder(self, onnx_export_dir: Path) -> Embedder:
        export = ensure_onnx_export(packaged_model_dir(), cache_dir=onnx_export_dir, precision="int8")
        return OnnxEmbedder(export)

    def test_it_stays_close_to_the_torch_model(self, embedder: Embedder) -> None:
        cosines = (embedder.encode(TEXTS) * SentenceTransformerEmbedder().encode(TEXTS)).sum(axis=1)
        assert cosines.min() > 0.95, cosines

    def test_similar_texts_are_closer_than_unrelated_ones(self, embedder: Embedder) -> None:
        a, b, c = embedder.encode(["fever and productive cough", "pneumonia with cough and fever", "a broken wrist"])
        assert a @ b > a @ c


class TestOnnxLocalModelDirectory(EmbedderContract):
    @pytest.fixture
    def embedder(self, tiny_embedder_dir: Path, onnx_export_dir: Path) -> Embedder:
        export = ensure_onnx_export(tiny_embedder_dir, cache_dir=onnx_export_dir, precision="fp32")
        return OnnxEmbedder(export, batch_size=2)

    def test_it_reproduces_its_torch_model(self, embedder: Embedder, tiny_embedder_dir: Path) -> None:
        torch_vectors = SentenceTransformerEmbedder(tiny_embedder_dir).encode(TEXTS)
        assert np.abs(embedder.encode(TEXTS) - torch_vectors).max() < 1e-5
