"""The fusion projector: image embeddings -> a few soft tokens in the language model's input space.

A two-layer MLP maps an encoder embedding to `tokens` vectors of the model's hidden size; they take the
place of the image slot in the prompt. Its output is rescaled to the typical norm of the model's own
token embeddings, so an untrained projector starts as a plausible input rather than a shock. It is
trained together with the LoRA adapter and saved in the adapter's directory, so it is versioned with it,
and it names the encoder version whose embeddings it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

WEIGHTS_FILE = "image_projector.pt"
CONFIG_FILE = "image_projector.json"


class SoftTokenProjector(nn.Module):
    def __init__(self, *, encoder_dim: int, hidden_size: int, tokens: int, embedding_norm: float) -> None:
        super().__init__()
        self.encoder_dim, self.hidden_size, self.tokens = encoder_dim, hidden_size, tokens
        self.net = nn.Sequential(
            nn.Linear(encoder_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, tokens * hidden_size)
        )
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False)
        # LayerNorm output has norm sqrt(hidden); this brings it to the model's own embedding norm.
        self.scale = nn.Parameter(torch.tensor(embedding_norm / hidden_size**0.5))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """(n, encoder_dim) -> (n, tokens, hidden_size)."""
        out = self.net(vectors).view(-1, self.tokens, self.hidden_size)
        return self.norm(out) * self.scale

    def save(self, directory: Path, *, encoder_version: str) -> None:
        torch.save(self.state_dict(), directory / WEIGHTS_FILE)
        config = {
            "encoder_version": encoder_version,
            "encoder_dim": self.encoder_dim,
            "hidden_size": self.hidden_size,
            "tokens": self.tokens,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, directory: Path) -> tuple[SoftTokenProjector, str] | None:
        """(projector, encoder version) saved in an adapter directory, or None when it has none."""
        config_path = directory / CONFIG_FILE
        if not config_path.exists():
            return None
        config = json.loads(config_path.read_text())
        projector = cls(
            encoder_dim=config["encoder_dim"],
            hidden_size=config["hidden_size"],
            tokens=config["tokens"],
            embedding_norm=1.0,
        )
        projector.load_state_dict(torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        return projector.eval(), config["encoder_version"]


def embedding_norm(model: nn.Module) -> float:
    """The median norm of the model's token embeddings."""
    weights = model.get_input_embeddings().weight.detach()
    return float(weights.norm(dim=1).median())
