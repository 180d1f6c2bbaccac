"""The swappable image part: an encoder from normalised pixels to an embedding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class ImageEncoder(Protocol):
    """Turns normalised images (uint8, size x size, see readers.model_input) into L2-normalised float32
    embeddings, one row per image. `version` names the encoder version that produced them."""

    version: str
    dim: int

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray: ...
