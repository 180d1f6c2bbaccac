"""The default image encoder: a compact convolutional network in plain PyTorch, trained by the service.

No pretrained medical weights can be fetched here and torchvision cannot be installed beside the pinned
torch, so the network is small enough to train from scratch on a CPU in minutes: blocks of two 3x3
convolutions with batch norm, halving the resolution until it is 4 x 4, then global average pooling, a
linear embedding and a linear classification head used only in training. The embedding is the encoder's
output (L2-normalised for the image index); the head gives the update cycle's image-case metrics.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

KIND = "cnn"


class ChestCNN(nn.Module):
    def __init__(self, *, size: int, width: int, embedding_dim: int, classes: int) -> None:
        super().__init__()
        blocks = max(1, int(math.log2(size // 4)))
        layers: list[nn.Module] = []
        channels_in = 1
        for block in range(blocks):
            channels = width * 2 ** min(block, 3)
            layers += [
                nn.Conv2d(channels_in, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels_in = channels
        self.features = nn.Sequential(*layers)
        self.embed = nn.Linear(channels_in, embedding_dim)
        # The training images' mean embedding: subtracted before normalising, so cosine similarity compares
        # what sets images apart rather than what every chest film shares.
        self.register_buffer("center", torch.zeros(embedding_dim))
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(embedding_dim, classes)

    def embedding(self, pixels: torch.Tensor) -> torch.Tensor:
        """Un-normalised embeddings of a (batch, 1, size, size) float batch in [0, 1]."""
        pooled = self.features((pixels - 0.5) / 0.25).mean(dim=(2, 3))
        return self.embed(pooled)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(torch.relu(self.embedding(pixels))))


def as_batch(images: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) / 255.0 for i in images]))[:, None]


class CnnImageEncoder:
    """A trained ChestCNN version, read from its saved state."""

    def __init__(self, *, version: str, network: ChestCNN, labels: list[str]) -> None:
        self.version = version
        self.network = network.eval()
        self.labels = labels
        self.dim = network.embed.out_features

    @torch.no_grad()
    def encode(self, images: Sequence[np.ndarray], *, batch_size: int = 256) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            vectors = self.network.embedding(as_batch(images[start : start + batch_size])) - self.network.center
            out.append(nn.functional.normalize(vectors, dim=1).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), dtype=np.float32)

    @torch.no_grad()
    def class_probabilities(self, images: Sequence[np.ndarray], *, batch_size: int = 256) -> np.ndarray:
        """(images x labels) softmax of the training head: the encoder's own image-only diagnosis."""
        out = []
        for start in range(0, len(images), batch_size):
            out.append(torch.softmax(self.network(as_batch(images[start : start + batch_size])), dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    # ----- persistence: one blob (state + architecture), stored in SQL like an adapter's archive ------------

    def to_bytes(self, architecture: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        torch.save({"architecture": architecture, "labels": self.labels, "state": self.network.state_dict()}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, version: str, blob: bytes) -> CnnImageEncoder:
        saved = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        network = ChestCNN(**saved["architecture"], classes=len(saved["labels"]))
        network.load_state_dict(saved["state"])
        return cls(version=version, network=network, labels=list(saved["labels"]))
