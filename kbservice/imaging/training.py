"""Training the CNN encoder on labelled image cases (the update cycle's encoder stage).

Cross-entropy with class-balanced weights and light label smoothing, AdamW with a cosine schedule, and
augmentation that respects radiographs (small shifts and zooms, brightness/contrast; no flips, which
would move the heart). An inner validation slice of the training images picks the best epoch, so the
held-out cases the gate judges on are never used for any choice here.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from kbservice.classification import probability_metrics
from kbservice.config import ImagingSettings
from kbservice.imaging.cnn import ChestCNN, CnnImageEncoder, as_batch
from kbservice.progress import NoProgress, Progress


@dataclass
class EncoderTraining:
    images: int
    epochs_run: int = 0
    best_epoch: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "seconds": round(self.seconds, 2),
            "images_per_s": round(self.images * self.epochs_run / self.seconds, 1) if self.seconds else 0.0,
            "stopped_early": self.stopped_early,
            "history": self.history,
        }


def architecture(settings: ImagingSettings) -> dict[str, int]:
    return {"size": settings.size, "width": settings.cnn_width, "embedding_dim": settings.cnn_embedding_dim}


def inner_split(labels: Sequence[int], *, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) indices: a seeded `fraction` of each class for validation."""
    rng = random.Random(seed)
    train, validation = [], []
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(members)
        count = max(1, round(len(members) * fraction)) if len(members) > 2 else 0
        validation += members[:count]
        train += members[count:]
    return sorted(train), sorted(validation)


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts and zooms (affine resampling) and brightness/contrast jitter, per image."""
    n = batch.shape[0]
    scale = 1.0 + (torch.rand(n, generator=generator) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = shift
    grid = nn.functional.affine_grid(theta, list(batch.shape), align_corners=False)
    moved = nn.functional.grid_sample(batch, grid, padding_mode="border", align_corners=False)
    contrast = 1.0 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.3
    brightness = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.2
    return ((moved - 0.5) * contrast + 0.5 + brightness).clamp(0.0, 1.0)


def train_cnn_encoder(
    images: Sequence[np.ndarray],
    labels: Sequence[int],
    *,
    label_names: list[str],
    version: str,
    settings: ImagingSettings,
    seed: int = 0,
    progress: Progress | None = None,
    on_epoch: Callable[[int], None] = lambda epoch: None,
    network: ChestCNN | None = None,
) -> tuple[CnnImageEncoder, EncoderTraining]:
    """A new encoder version trained on (image, label index) pairs, from scratch or fine-tuning `network`
    (pre-trained, with a head for `label_names`); deterministic per seed. Stops after `cnn_epochs`, or once
    `cnn_max_seconds` have passed, keeping the best validation epoch."""
    if len(images) < 2 or len(set(labels)) < 2:
        raise ValueError("an image encoder needs at least two labelled images of two different classes")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_idx, val_idx = inner_split(labels, fraction=0.1, seed=seed)
    x_train, y_train = as_batch([images[i] for i in train_idx]), torch.tensor([labels[i] for i in train_idx])
    x_val, y_val = [images[i] for i in val_idx], [labels[i] for i in val_idx]
    if network is None:
        torch.manual_seed(seed)
        network = ChestCNN(**architecture(settings), classes=len(label_names))
    counts = torch.bincount(y_train, minlength=len(label_names)).float().clamp(min=1)
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (len(label_names) * counts), label_smoothing=0.05)
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.cnn_learning_rate, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train_idx) / settings.cnn_batch_size)
    total_steps = steps_per_epoch * settings.cnn_epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    result = EncoderTraining(images=len(train_idx))
    best_score, best_state = -math.inf, None
    started = time.perf_counter()
    with (progress or NoProgress()).task("Training image encoder (epochs)", total=settings.cnn_epochs) as advance:
        for epoch in range(1, settings.cnn_epochs + 1):
            network.train()
            order = torch.randperm(len(train_idx), generator=generator)
            total_loss = 0.0
            for start in range(0, len(order), settings.cnn_batch_size):
                batch = order[start : start + settings.cnn_batch_size]
                loss = loss_fn(network(augment(x_train[batch], generator)), y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total_loss += float(loss.item()) * len(batch)
            recalibrate_batch_norm(network, x_train)
            encoder = CnnImageEncoder(version=version, network=network, labels=label_names)
            score = _validation_score(encoder, x_val, y_val) if val_idx else -float(total_loss)
            network.train()
            result.history.append(
                {"epoch": epoch, "loss": round(total_loss / len(order), 4), "val_f1": round(score, 4)}
            )
            if score > best_score:
                best_score, result.best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            result.epochs_run = epoch
            advance(1, status=f"loss {total_loss / len(order):.3f} · validation macro-F1 {score:.3f}")
            on_epoch(epoch)
            if time.perf_counter() - started > settings.cnn_max_seconds and epoch < settings.cnn_epochs:
                result.stopped_early = True
                break
    result.seconds = time.perf_counter() - started
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    with torch.no_grad():
        network.center.copy_(
            torch.cat([network.embedding(x_train[i : i + 256]) for i in range(0, len(x_train), 256)]).mean(dim=0)
        )
    return CnnImageEncoder(version=version, network=network, labels=label_names), result


@torch.no_grad()
def recalibrate_batch_norm(network: nn.Module, images: torch.Tensor, *, batch_size: int = 256) -> None:
    """Batch-norm statistics as the exact average over the training images (not a lagging running mean):
    with a few hundred images there are too few steps for the running mean to settle."""
    layers = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average
    network.train()
    for start in range(0, len(images), batch_size):
        network.embedding(images[start : start + batch_size])
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    network.eval()


def _validation_score(encoder: CnnImageEncoder, images: list[np.ndarray], labels: list[int]) -> float:
    probabilities = encoder.class_probabilities(images)
    return probability_metrics(labels, probabilities)["macro_f1"]
