"""The transformers Generator's scores, exactly: on a tiny random Llama with SmolLM2's real tokenizer (the
protocol's contract is test_generator_contract.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbservice.llm.model_files import BaseModel, packaged_gguf
from kbservice.llm.transformers_generator import TransformersGenerator


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory: pytest.TempPathFactory) -> TransformersGenerator:
    from transformers import AutoTokenizer

    from tests.helpers import tiny_llama

    folder = tmp_path_factory.mktemp("tiny-smollm")
    gguf = packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tiny_llama(vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return TransformersGenerator(BaseModel(path=Path(folder), name="tiny-smollm", sha256="0" * 64))


def test_candidate_scores_match_one_forward_each(tiny_generator: TransformersGenerator) -> None:
    import torch

    prompt = tiny_generator.chat_prompt("Fever, cough and crackles. Most likely diagnosis?")
    candidates = ["pneumonia", "pulmonary embolism", "asthma"]
    scores = tiny_generator.score_candidates(prompt, candidates)
    tokenizer, model = tiny_generator.tokenizer, tiny_generator.model
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    for candidate, score in zip(candidates, scores, strict=True):
        ids = tokenizer(" " + candidate, add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + ids])).logits[0]
        logprobs = torch.log_softmax(logits, dim=-1)
        expected = sum(logprobs[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(ids))
        assert score.total_logprob == pytest.approx(expected, abs=1e-4)
        assert score.tokens == len(ids)
