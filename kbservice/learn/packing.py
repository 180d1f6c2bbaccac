"""Sequence packing for training: examples tokenized exactly as the scorer sees them, packed first-fit into
sequences of at most `pack_tokens` tokens with a block-diagonal causal mask and position ids restarting per
example, so no token is padding and no example sees another."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from kbservice.llm.soft_tokens import ids_with_slots, strip_slots


@dataclass(frozen=True)
class TrainingExample:
    case_id: int
    prompt: str  # the chat prompt, ending where the model writes the diagnosis (image slots included)
    target: str  # what it should write: " <diagnosis>" (+ "\nTreatment: ...")
    image_vectors: np.ndarray | None = None  # (images, encoder dim) of the case, for the soft tokens


Tokenized = tuple[list[int], list[int], list[int]]  # prompt ids, target ids, soft-token positions in the prompt


def tokenize(
    tokenizer, examples: Sequence[TrainingExample], *, max_tokens: int, soft_tokens: int = 0
) -> list[Tokenized]:  # type: ignore[no-untyped-def]
    """(prompt ids, target ids, soft positions) per example, tokenized apart exactly as the scorer does
    (image slots become `soft_tokens` positions when the example has image vectors, else plain text); a
    prompt too long for one packed sequence loses its start (the end holds the patient and the answer cue)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    out = []
    for example in examples:
        with_image = soft_tokens > 0 and example.image_vectors is not None
        text = example.prompt if with_image else strip_slots(example.prompt)
        prompt, positions = ids_with_slots(tokenizer, text, tokens=soft_tokens if with_image else 0)
        target = tokenizer(example.target, add_special_tokens=False).input_ids + eos
        target = target[: max_tokens // 2]
        cut = max(len(prompt) - (max_tokens - len(target)), 0)
        prompt = prompt[cut:]
        positions = [p - cut for p in positions] if positions and min(positions) >= cut else []
        out.append((prompt, target, positions))
    return out


def pack(lengths: Sequence[int], *, max_tokens: int) -> list[list[int]]:
    """First-fit decreasing bins of example indices, each summing to at most `max_tokens`."""
    bins: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(room):
            if lengths[index] <= free:
                bins[b].append(index)
                room[b] -= lengths[index]
                break
        else:
            bins.append([index])
            room.append(max_tokens - lengths[index])
    return bins


@dataclass(frozen=True)
class PackedSequence:
    input_ids: torch.Tensor  # (1, L)
    position_ids: torch.Tensor  # (1, L), restarting at 0 for each example
    attention_mask: torch.Tensor  # (1, 1, L, L) additive, block-diagonal causal
    predict_at: torch.Tensor  # positions whose logits predict a target token
    labels: torch.Tensor  # the target token each of those positions predicts
    soft_at: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # soft-token positions
    soft_source: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.long))  # (row, token)
    soft_vectors: torch.Tensor | None = None  # (examples with images, encoder dim): mean image embedding each

    def to(self, device: str) -> PackedSequence:
        """The same sequence with every tensor on `device` (itself when they already are there)."""
        if device == "cpu":
            return self
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return PackedSequence(**{name: None if v is None else v.to(device) for name, v in values.items()})


def packed_sequence(
    items: Sequence[Tokenized], vectors: Sequence[np.ndarray | None] | None = None, *, soft_tokens: int = 0
) -> PackedSequence:
    """One packed training sequence; `vectors[n]` are item n's image embeddings, whose mean the projector
    turns into the `soft_tokens` embeddings of each of its slots."""
    ids: list[int] = []
    positions: list[int] = []
    owner: list[int] = []
    predict_at: list[int] = []
    labels: list[int] = []
    soft_at: list[int] = []
    soft_source: list[tuple[int, int]] = []
    soft_vectors: list[np.ndarray] = []
    for n, (prompt, target, slots) in enumerate(items):
        start = len(ids)
        vector = vectors[n] if vectors is not None else None
        if slots and vector is not None:
            row = len(soft_vectors)
            soft_vectors.append(np.asarray(vector, dtype=np.float32).mean(axis=0))
            for k, p in enumerate(slots):
                soft_at.append(start + p)
                soft_source.append((row, k % soft_tokens))
        sequence = prompt + target
        ids += sequence
        positions += range(len(sequence))
        owner += [n] * len(sequence)
        for t, token in enumerate(target):
            predict_at.append(start + len(prompt) + t - 1)
            labels.append(token)
    who = torch.tensor(owner)
    index = torch.arange(len(ids))
    allowed = (who[:, None] == who[None, :]) & (index[None, :] <= index[:, None])
    mask = torch.zeros((1, 1, len(ids), len(ids)))
    mask.masked_fill_(~allowed, torch.finfo(mask.dtype).min)
    return PackedSequence(
        input_ids=torch.tensor([ids]),
        position_ids=torch.tensor([positions]),
        attention_mask=mask,
        predict_at=torch.tensor(predict_at),
        labels=torch.tensor(labels),
        soft_at=torch.tensor(soft_at, dtype=torch.long),
        soft_source=torch.tensor(soft_source, dtype=torch.long).reshape(-1, 2),
        soft_vectors=torch.from_numpy(np.stack(soft_vectors)) if soft_vectors else None,
    )
