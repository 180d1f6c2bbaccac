"""Packing is exact (no example sees another) and LoRA training learns and saves a loadable adapter."""

from __future__ import annotations

from pathlib import Path

import torch

from kbservice.config import LearnSettings
from kbservice.learn.packing import TrainingExample, pack, packed_sequence, tokenize
from kbservice.learn.train import load_base, train_lora


def test_pack_fills_bins_without_overflow() -> None:
    lengths = [700, 300, 200, 900, 100, 24]
    bins = pack(lengths, max_tokens=1024)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 1024 for b in bins) and len(bins) == 3


@torch.no_grad()
def test_packed_logits_equal_each_example_alone(tiny_lm_dir: Path) -> None:
    tokenizer, model = load_base(tiny_lm_dir)
    model.eval()
    examples = [
        TrainingExample(1, "Findings: wheeze at night\nDiagnosis:", " Asthma"),
        TrainingExample(2, "Findings: fever and productive cough for three days\nDiagnosis:", " Pneumonia"),
    ]
    items = tokenize(tokenizer, examples, max_tokens=1024)
    packed = packed_sequence(items)
    out = model(
        input_ids=packed.input_ids,
        position_ids=packed.position_ids,
        attention_mask=packed.attention_mask,
        logits_to_keep=packed.predict_at,
    ).logits[0]
    row = 0
    for prompt, target, _ in items:
        alone = model(input_ids=torch.tensor([prompt + target])).logits[0]
        for t in range(len(target)):
            torch.testing.assert_close(out[row], alone[len(prompt) + t - 1], atol=1e-4, rtol=1e-4)
            row += 1
    assert row == len(packed.labels)


def test_training_lowers_the_loss_and_saves_an_adapter(tiny_lm_dir: Path, tmp_path: Path) -> None:
    examples = [TrainingExample(i, f"Findings: case {i} with wheeze\nDiagnosis:", " Asthma") for i in range(8)]
    # The tiny random model starts near-uniform over 49k tokens (loss ~10.7); LoRA on q/v moves it slowly.
    settings = LearnSettings(learning_rate=3e-2, epochs=10, pack_tokens=128)
    result = train_lora(tiny_lm_dir, examples, settings=settings, init_adapter=None, out_dir=tmp_path / "a1")
    assert result.steps == 10 * result.sequences and result.tokens > 0
    assert result.losses[-1] < result.losses[0] - 0.2  # it learned something of the label
    assert (tmp_path / "a1" / "adapter_config.json").exists()
    # Training on from a saved adapter starts where it ended.
    again = train_lora(
        tiny_lm_dir,
        examples[:2],
        settings=LearnSettings(epochs=1),
        init_adapter=tmp_path / "a1",
        out_dir=tmp_path / "a2",
    )
    assert again.losses[0] < result.losses[0] - 0.2


def test_a_packed_sequence_moves_every_tensor_to_the_training_device(tiny_lm_dir: Path) -> None:
    """The CUDA path of training, exercised on torch's "meta" device (present without a GPU)."""
    tokenizer, _ = load_base(tiny_lm_dir)
    items = tokenize(tokenizer, [TrainingExample(1, "Findings: wheeze\nDiagnosis:", " Asthma")], max_tokens=1024)
    packed = packed_sequence(items)
    assert packed.to("cpu") is packed
    moved = packed.to("meta")
    for name in ("input_ids", "position_ids", "attention_mask", "predict_at", "labels", "soft_at", "soft_source"):
        assert getattr(moved, name).device.type == "meta" and getattr(moved, name).shape == getattr(packed, name).shape
    assert moved.soft_vectors is None
