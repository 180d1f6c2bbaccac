"""LoRA training (PEFT) on the recommendation prompt, with sequence packing.

Each example is the exact diagnosis prompt `recommend` scores (retrieved context + patient, ending with
"Diagnosis:") followed by the target: the case's diagnosis (and its treatment when recorded). Examples
are packed first-fit into sequences of at most `pack_tokens` tokens with a block-diagonal causal mask and
position ids restarting per example, so no token is padding and no example sees another. The loss is
taken on target tokens only, and logits are computed only at the positions that predict them (on a 135M
model the vocabulary projection costs as much as the layers).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kbservice.config import LearnSettings
from kbservice.llm.soft_tokens import ids_with_slots, strip_slots
from kbservice.progress import NoProgress, Progress


@dataclass(frozen=True)
class TrainingExample:
    case_id: int
    prompt: str  # the chat prompt, ending where the model writes the diagnosis (image slots included)
    target: str  # what it should write: " <diagnosis>" (+ "\nTreatment: ...")
    image_vectors: np.ndarray | None = None  # (images, encoder dim) of the case, for the soft tokens


@dataclass(frozen=True)
class ImageFusion:
    """Train an image projector with the adapter: soft tokens per slot, from this encoder's embeddings."""

    encoder_version: str
    encoder_dim: int
    tokens: int


@dataclass
class TrainingResult:
    examples: int
    sequences: int
    steps: int
    tokens: int  # every token forwarded (prompt + target)
    target_tokens: int
    seconds: float  # forward + backward + optimiser steps only
    losses: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict:
        return {
            "examples": self.examples,
            "sequences": self.sequences,
            "steps": self.steps,
            "tokens": self.tokens,
            "target_tokens": self.target_tokens,
            "seconds": round(self.seconds, 3),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "first_loss": round(self.losses[0], 4) if self.losses else None,
            "final_loss": round(sum(self.losses[-5:]) / len(self.losses[-5:]), 4) if self.losses else None,
        }


def hyperparameters(settings: LearnSettings) -> dict:
    return {
        "lora_r": settings.lora_r,
        "lora_alpha": settings.lora_alpha,
        "lora_dropout": settings.lora_dropout,
        "target_modules": list(settings.target_modules),
        "learning_rate": settings.learning_rate,
        "epochs": settings.epochs,
        "pack_tokens": settings.pack_tokens,
        "seed": settings.seed,
        "optimizer": "AdamW",
        "grad_clip": 1.0,
    }


def load_base(model_path: Path):  # type: ignore[no-untyped-def]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
    return tokenizer, model


def lora_model(model, settings: LearnSettings, *, init_adapter: Path | None):  # type: ignore[no-untyped-def]
    """`model` with a trainable LoRA adapter: a copy of `init_adapter` (the champion) or a fresh one."""
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(settings.seed)
    if init_adapter is not None:
        return PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


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


def train_lora(
    model_path: Path,
    examples: Sequence[TrainingExample],
    *,
    settings: LearnSettings,
    init_adapter: Path | None,
    out_dir: Path,
    progress: Progress | None = None,
    on_step: Callable[[int], None] = lambda step: None,
    fusion: ImageFusion | None = None,
    projector_learning_rate: float = 1e-3,
) -> TrainingResult:
    """Trains a LoRA adapter on `examples` (starting from `init_adapter`, else fresh) and saves it into
    `out_dir`. Deterministic for a given seed. `on_step` runs after every optimiser step (lease renewal).
    With `fusion`, an image projector is trained alongside on the examples that have image vectors (starting
    from `init_adapter`'s when it was trained on the same encoder) and saved with the adapter."""
    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(settings.seed)
    tokenizer, base = load_base(model_path)
    model = lora_model(base, settings, init_adapter=init_adapter)
    model.train()
    projector = _projector(model, fusion, init_adapter) if fusion else None
    soft_tokens = fusion.tokens if fusion else 0
    tokenized = tokenize(tokenizer, examples, max_tokens=settings.pack_tokens, soft_tokens=soft_tokens)
    bins = pack([len(p) + len(t) for p, t, _ in tokenized], max_tokens=settings.pack_tokens)
    sequences = [
        packed_sequence([tokenized[i] for i in b], [examples[i].image_vectors for i in b], soft_tokens=soft_tokens)
        for b in bins
    ]
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": settings.learning_rate}]
    if projector is not None:
        groups.append({"params": list(projector.parameters()), "lr": projector_learning_rate})
    optimizer = torch.optim.AdamW(groups)
    order_rng = random.Random(settings.seed)
    result = TrainingResult(
        examples=len(examples), sequences=len(sequences), steps=0, tokens=0, target_tokens=0, seconds=0.0
    )
    total_tokens = sum(s.input_ids.shape[1] for s in sequences) * settings.epochs
    with (progress or NoProgress()).task("Training LoRA adapter (tokens)", total=total_tokens) as advance:
        for _epoch in range(settings.epochs):
            order = list(range(len(sequences)))
            order_rng.shuffle(order)
            for i in order:
                started = time.perf_counter()
                loss = _step(model, optimizer, sequences[i], projector)
                result.seconds += time.perf_counter() - started
                result.steps += 1
                result.tokens += sequences[i].input_ids.shape[1]
                result.target_tokens += len(sequences[i].labels)
                result.losses.append(loss)
                advance(sequences[i].input_ids.shape[1], status=f"loss {loss:.3f} · {result.tokens_per_s:.0f} tok/s")
                on_step(result.steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    if projector is not None and fusion is not None:
        projector.save(out_dir, encoder_version=fusion.encoder_version)
    return result


def _projector(model, fusion: ImageFusion, init_adapter: Path | None):  # type: ignore[no-untyped-def]
    """The champion's projector when it read the same encoder, else a fresh one."""
    from kbservice.llm.projector import SoftTokenProjector, embedding_norm

    found = SoftTokenProjector.load(init_adapter) if init_adapter is not None else None
    if found is not None and found[1] == fusion.encoder_version and found[0].tokens == fusion.tokens:
        return found[0].train()
    hidden = model.get_input_embeddings().weight.shape[1]
    return SoftTokenProjector(
        encoder_dim=fusion.encoder_dim, hidden_size=hidden, tokens=fusion.tokens, embedding_norm=embedding_norm(model)
    ).train()


def _step(model, optimizer, sequence: PackedSequence, projector=None) -> float:  # type: ignore[no-untyped-def]
    inputs: dict[str, torch.Tensor] = {"input_ids": sequence.input_ids}
    if projector is not None and sequence.soft_vectors is not None:
        embeds = model.get_input_embeddings()(sequence.input_ids).clone()
        tokens = projector(sequence.soft_vectors)  # (rows, soft tokens, hidden)
        embeds[0, sequence.soft_at] = tokens[sequence.soft_source[:, 0], sequence.soft_source[:, 1]]
        inputs = {"inputs_embeds": embeds}
    out = model(
        **inputs,
        position_ids=sequence.position_ids,
        attention_mask=sequence.attention_mask,
        logits_to_keep=sequence.predict_at,
        use_cache=False,
    )
    loss = torch.nn.functional.cross_entropy(out.logits[0].float(), sequence.labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.item())


def bare_peft_loop(model_path: Path, examples: Sequence[TrainingExample], *, settings: LearnSettings) -> TrainingResult:
    """The benchmark's reference: a plain PEFT loop, one example per step (no padding), the model's own
    loss over the target tokens (labels -100 on the prompt), same data, LoRA config and optimiser."""
    torch.manual_seed(settings.seed)
    tokenizer, base = load_base(model_path)
    model = lora_model(base, settings, init_adapter=None)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    result = TrainingResult(
        examples=len(examples), sequences=len(examples), steps=0, tokens=0, target_tokens=0, seconds=0.0
    )
    for prompt, target, _ in tokenize(tokenizer, examples, max_tokens=settings.pack_tokens):
        ids = torch.tensor([prompt + target])
        labels = torch.tensor([[-100] * len(prompt) + target])
        started = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        result.seconds += time.perf_counter() - started
        result.steps += 1
        result.tokens += ids.shape[1]
        result.target_tokens += len(target)
        result.losses.append(float(loss.item()))
    return result
