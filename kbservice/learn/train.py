"""LoRA training (PEFT) on the recommendation prompt, over packed sequences (packing.py).

Each example is the exact diagnosis prompt `recommend` scores (retrieved context + patient, ending with
"Diagnosis:") followed by the target: the case's diagnosis (and its treatment when recorded). The loss is
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

import torch

from kbservice.config import LearnSettings
from kbservice.learn.packing import PackedSequence, TrainingExample, pack, packed_sequence, tokenize
from kbservice.progress import NoProgress, Progress


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
    device: str = "cpu",
) -> TrainingResult:
    """Trains a LoRA adapter on `examples` (starting from `init_adapter`, else fresh) and saves it into
    `out_dir`. Deterministic for a given seed. `on_step` runs after every optimiser step (lease renewal).
    With `fusion`, an image projector is trained alongside on the examples that have image vectors (starting
    from `init_adapter`'s when it was trained on the same encoder) and saved with the adapter. On CUDA the
    weights stay float32 (the adapter is saved as on the CPU); only the arithmetic moves."""
    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(settings.seed)
    tokenizer, base = load_base(model_path)
    model = lora_model(base.to(device), settings, init_adapter=init_adapter)
    model.train()
    projector = _projector(model, fusion, init_adapter).to(device) if fusion else None
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
                loss = _step(model, optimizer, sequences[i].to(device), projector)
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
