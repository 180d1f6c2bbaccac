"""Image soft tokens: exact positions in scoring, a projector trained with the adapter and versioned in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kbservice.config import LearnSettings
from kbservice.learn.train import ImageFusion, TrainingExample, train_lora
from kbservice.llm.projector import CONFIG_FILE, SoftTokenProjector
from kbservice.llm.scoring import encode_prefix, score_continuations
from kbservice.llm.soft_tokens import IMAGE_SLOT, SLOT_AS_TEXT, ids_with_slots, strip_slots


@pytest.fixture(scope="module")
def tiny_llama() -> torch.nn.Module:
    from tests.helpers import tiny_llama as build

    return build(vocab_size=97).eval()


def _naive_with_embeds(model, prompt, positions, soft, continuation) -> float:  # type: ignore[no-untyped-def]
    ids = torch.tensor([prompt + continuation])
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        embeds[0, positions] = soft
        logits = model(inputs_embeds=embeds).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return sum(logprobs[len(prompt) - 1 + i, token].item() for i, token in enumerate(continuation))


@pytest.mark.parametrize("cached_head", [False, True])
def test_soft_tokens_take_exactly_their_positions(tiny_llama: torch.nn.Module, cached_head: bool) -> None:
    prompt = [5, 17, 3, 88, 0, 0, 0, 42, 9, 60]
    positions = [4, 5, 6]
    soft = torch.randn(3, tiny_llama.config.hidden_size)
    head = encode_prefix(tiny_llama, prompt[:3]) if cached_head else None
    candidates = [[7], [12, 45, 3]]
    scores = score_continuations(
        tiny_llama, prompt_ids=prompt, continuations=candidates, head=head, soft=(positions, soft)
    )
    plain = score_continuations(tiny_llama, prompt_ids=prompt, continuations=candidates, head=head)
    for candidate, score, without in zip(candidates, scores, plain, strict=True):
        assert score.total_logprob == pytest.approx(
            _naive_with_embeds(tiny_llama, prompt, positions, soft, candidate), abs=1e-4
        )
        assert abs(score.total_logprob - without.total_logprob) > 1e-4  # the image changed the answer


def test_slots_become_filler_positions_or_plain_text(tiny_lm_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_lm_dir))
    text = f"Patient.\nImage: {IMAGE_SLOT}\nFindings: cough"
    ids, positions = ids_with_slots(tokenizer, text, tokens=4)
    before = tokenizer("Patient.\nImage: ", add_special_tokens=False).input_ids
    after = tokenizer("\nFindings: cough", add_special_tokens=False).input_ids
    assert positions == list(range(len(before), len(before) + 4)) and ids == before + [ids[positions[0]]] * 4 + after
    plain, none = ids_with_slots(tokenizer, strip_slots(text), tokens=4)
    assert none == [] and SLOT_AS_TEXT in tokenizer.decode(plain)


def test_projector_trains_with_the_adapter_and_is_saved_in_it(tiny_lm_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    examples = [
        TrainingExample(
            case_id=n,
            prompt=f"Image: {IMAGE_SLOT}\nFindings: cough\nDiagnosis:",
            target=" Upper" if n % 2 else " Lower",
            image_vectors=rng.normal(size=(1, 16)).astype(np.float32) + (2.0 if n % 2 else -2.0),
        )
        for n in range(16)
    ]
    fusion = ImageFusion(encoder_version="e7", encoder_dim=16, tokens=3)
    result = train_lora(
        tiny_lm_dir,
        examples,
        settings=LearnSettings(epochs=3, pack_tokens=256, learning_rate=5e-3),
        init_adapter=None,
        out_dir=tmp_path / "a1",
        fusion=fusion,
    )
    assert result.losses[-1] < result.losses[0]
    loaded = SoftTokenProjector.load(tmp_path / "a1")
    assert loaded is not None and loaded[1] == "e7" and loaded[0].tokens == 3
    assert (tmp_path / "a1" / CONFIG_FILE).exists()
    # The generator uses it for prompts with an image slot and image vectors, and only then.
    from kbservice.llm.model_files import BaseModel
    from kbservice.llm.transformers_generator import TransformersGenerator

    generator = TransformersGenerator(BaseModel(name="tiny", path=tiny_lm_dir, sha256="0" * 64))
    generator.load_adapter("a1", tmp_path / "a1")
    assert generator.projector_encoder("a1") == "e7" and generator.projector_encoder(None) is None
    prompt = examples[0].prompt
    upper = generator.score_candidates(
        prompt, ["Upper", "Lower"], adapter="a1", image_vectors=examples[1].image_vectors
    )
    lower = generator.score_candidates(
        prompt, ["Upper", "Lower"], adapter="a1", image_vectors=examples[0].image_vectors
    )
    # The image decides: an "upper" image favours Upper more than a "lower" image does.
    margin_upper = upper[0].total_logprob - upper[1].total_logprob
    margin_lower = lower[0].total_logprob - lower[1].total_logprob
    assert margin_upper > margin_lower
    # No vectors: the slot is plain text and the projector is not used.
    plain = generator.score_candidates(prompt, ["Upper", "Lower"], adapter="a1")
    assert plain[0].total_logprob not in (upper[0].total_logprob, lower[0].total_logprob)
