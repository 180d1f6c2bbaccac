"""Self-supervised pre-training of the CNN encoder on images without their labels (SimCLR).

Two augmented views of each image are embedded and passed through a small projection head; the NT-Xent
loss pulls the two views of one image together and pushes them from every other image in the batch. What
the network learns is what stays the same under the augmentations, so they are chosen for radiographs:
crops that zoom in by up to a quarter, shifts, rotations of a few degrees, brightness, contrast and gamma
jitter, a little noise. No flips: a mirrored chest film moves the heart to the wrong side, and left/right
is part of the anatomy the encoder should keep. The projection head is dropped afterwards; fine-tuning
(imaging.training) starts from the pre-trained convolution and embedding layers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from kbservice.config import ImagingSettings
from kbservice.imaging.cnn import ChestCNN, as_batch
from kbservice.imaging.training import architecture
from kbservice.progress import NoProgress, Progress

PROJECTION_DIM = 64


@dataclass
class Pretraining:
    """What pre-training saw and did: recorded with the encoder version it leads to."""

    images: int
    epochs_run: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: mean NT-Xent loss

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "epochs_run": self.epochs_run,
            "seconds": round(self.seconds, 2),
            "stopped_early": self.stopped_early,
            "first_loss": self.history[0]["loss"] if self.history else None,
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "history": self.history,
        }


def hyperparameters(settings: ImagingSettings) -> dict[str, Any]:
    return {
        "method": "simclr",
        "epochs": settings.cnn_pretrain_epochs,
        "batch_size": settings.cnn_pretrain_batch_size,
        "temperature": settings.cnn_pretrain_temperature,
        "learning_rate": settings.cnn_learning_rate,
        "max_seconds": settings.cnn_pretrain_max_seconds,
        "projection_dim": PROJECTION_DIM,
    }


def radiograph_view(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view per image: zoom-in crop (scale 0.75-1), shift, rotation within +-10 degrees,
    brightness, contrast and gamma jitter, Gaussian noise; never a flip."""
    n = batch.shape[0]
    zoom = 0.75 + torch.rand(n, generator=generator) * 0.25  # the share of the side that stays in view
    angle = (torch.rand(n, generator=generator) - 0.5) * (2 * math.pi * 10 / 360) * 2
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 2 * (1 - zoom)[:, None]
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = nn.functional.affine_grid(theta, list(batch.shape), align_corners=False)
    view = nn.functional.grid_sample(batch, grid, padding_mode="border", align_corners=False)
    gamma = torch.exp((torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.6)
    view = view.clamp(1e-4, 1.0) ** gamma
    contrast = 1.0 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.6
    brightness = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.3
    noise = torch.randn(view.shape, generator=generator) * 0.02
    return ((view - 0.5) * contrast + 0.5 + brightness + noise).clamp(0.0, 1.0)


def nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss over 2n projections: each view's positive is the other view of its image."""
    z = nn.functional.normalize(torch.cat([first, second]), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(-math.inf)
    n = first.shape[0]
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return nn.functional.cross_entropy(similarity, positives)


def pretrain_contrastive(
    network: ChestCNN,
    images: Sequence[np.ndarray],
    *,
    settings: ImagingSettings,
    seed: int = 0,
    progress: Progress | None = None,
    on_epoch: Callable[[int], None] = lambda epoch: None,
) -> Pretraining:
    """Trains `network`'s convolutions and embedding in place on unlabelled `images` (deterministic per
    seed); stops after `cnn_pretrain_epochs` or once `cnn_pretrain_max_seconds` have passed."""
    result = Pretraining(images=len(images))
    batch_size = min(settings.cnn_pretrain_batch_size, len(images))
    if settings.cnn_pretrain_epochs == 0 or batch_size < 2:
        return result
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    pixels = as_batch(images)
    width = network.embed.out_features
    projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, PROJECTION_DIM))
    parameters = [*network.features.parameters(), *network.embed.parameters(), *projection.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=settings.cnn_learning_rate, weight_decay=1e-4)
    steps = settings.cnn_pretrain_epochs * (len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1)))
    )
    network.train()
    started = time.perf_counter()
    with (progress or NoProgress()).task(
        "Pre-training image encoder on unlabelled images (epochs)", total=settings.cnn_pretrain_epochs
    ) as advance:
        for epoch in range(1, settings.cnn_pretrain_epochs + 1):
            order = torch.randperm(len(images), generator=generator)
            total, batches = 0.0, 0
            for start in range(0, len(order) - batch_size + 1, batch_size):  # full batches: negatives
                batch = pixels[order[start : start + batch_size]]
                first = projection(network.embedding(radiograph_view(batch, generator)))
                second = projection(network.embedding(radiograph_view(batch, generator)))
                loss = nt_xent(first, second, settings.cnn_pretrain_temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total, batches = total + float(loss.item()), batches + 1
            result.history.append({"epoch": epoch, "loss": round(total / batches, 4)})
            result.epochs_run = epoch
            advance(1, status=f"contrastive loss {total / batches:.3f}")
            on_epoch(epoch)
            out_of_time = time.perf_counter() - started > settings.cnn_pretrain_max_seconds
            if out_of_time and epoch < settings.cnn_pretrain_epochs:
                result.stopped_early = True
                break
    result.seconds = time.perf_counter() - started
    network.eval()
    return result


def pretrained_network(
    images: Sequence[np.ndarray],
    *,
    classes: int,
    settings: ImagingSettings,
    seed: int = 0,
    progress: Progress | None = None,
    on_epoch: Callable[[int], None] = lambda epoch: None,
) -> tuple[ChestCNN, Pretraining]:
    """A new network (seeded as training from scratch seeds it) with a head for `classes`, pre-trained on
    `images` without their labels, ready to fine-tune."""
    torch.manual_seed(seed)
    network = ChestCNN(**architecture(settings), classes=classes)
    record = pretrain_contrastive(network, images, settings=settings, seed=seed, progress=progress, on_epoch=on_epoch)
    return network, record
