"""The ImageEncoder contract, run by both implementations: the CNN the update cycle trains (here with random
weights) and a local Hugging Face vision model (here a tiny random ViT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kbservice.imaging.cnn import ChestCNN, CnnImageEncoder
from kbservice.imaging.hf_encoder import HuggingFaceImageEncoder
from kbservice.imaging.protocols import ImageEncoder
from tests.imaging.images import two_class_images

SIZE = 16


class ImageEncoderContract:
    @pytest.fixture
    def encoder(self) -> ImageEncoder:
        raise NotImplementedError

    def test_embeddings_are_unit_float32_rows_in_input_order(self, encoder: ImageEncoder) -> None:
        images, _ = two_class_images(5, size=SIZE, seed=1)
        vectors = encoder.encode(images)
        assert vectors.shape == (5, encoder.dim) and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        for i, image in enumerate(images):
            assert np.allclose(encoder.encode([image])[0], vectors[i], atol=1e-5)

    def test_the_same_image_gets_the_same_embedding(self, encoder: ImageEncoder) -> None:
        images, _ = two_class_images(2, size=SIZE, seed=2)
        first, again = encoder.encode(images), encoder.encode(images)
        assert np.array_equal(first, again) and not np.allclose(first[0], first[1])

    def test_no_images_give_an_empty_matrix(self, encoder: ImageEncoder) -> None:
        assert encoder.encode([]).shape == (0, encoder.dim)

    def test_it_names_its_version(self, encoder: ImageEncoder) -> None:
        assert isinstance(encoder.version, str) and encoder.version and encoder.dim > 0


class TestCnnEncoder(ImageEncoderContract):
    @pytest.fixture
    def encoder(self) -> ImageEncoder:
        import torch

        torch.manual_seed(0)
        network = ChestCNN(size=SIZE, width=8, embedding_dim=16, classes=2)
        return CnnImageEncoder(version="e1", network=network, labels=["Upper opacity", "Lower opacity"])

    def test_it_survives_its_stored_form(self, encoder: CnnImageEncoder) -> None:
        architecture = {"size": SIZE, "width": 8, "embedding_dim": 16}
        again = CnnImageEncoder.from_bytes("e1", encoder.to_bytes(architecture))
        images, _ = two_class_images(3, size=SIZE, seed=4)
        assert np.array_equal(again.encode(images), encoder.encode(images))


class TestHuggingFaceEncoder(ImageEncoderContract):
    @pytest.fixture
    def encoder(self, tiny_vit_dir: Path) -> ImageEncoder:
        return HuggingFaceImageEncoder(tiny_vit_dir, version="hf-test")
