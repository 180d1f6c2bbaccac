"""The swappable image part: an encoder from normalised pixels to an embedding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


class ImageEncoder(Protocol):
    """Turns normalised images (uint8, size x size, see readers.model_input) into L2-normalised float32
    embeddings, one row per image. `version` names the encoder version that produced them."""

    version: str
    dim: int

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


@runtime_checkable
class ClassifyingEncoder(ImageEncoder, Protocol):
    """An encoder trained with a class head (the CNN): it can also diagnose images on its own, over the
    `labels` it was trained on."""

    labels: list[str]

    def class_probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(images x labels) probabilities."""
        ...
