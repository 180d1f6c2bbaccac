"""The Generator contract, run by every implementation: today the transformers generator, on a tiny random
Llama with SmolLM2's real tokenizer and chat template (mechanics, not language)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbservice.errors import UnknownAdapterError
from kbservice.llm.model_files import BaseModel
from kbservice.llm.protocols import Generator
from kbservice.llm.transformers_generator import TransformersGenerator

CANDIDATES = ["pneumonia", "pulmonary embolism", "asthma"]


class GeneratorContract:
    @pytest.fixture
    def generator(self) -> Generator:
        raise NotImplementedError

    def test_the_chat_prompt_carries_the_message_and_the_system_text(self, generator: Generator) -> None:
        prompt = generator.chat_prompt("Fever and cough.", system="Answer briefly.")
        assert "Fever and cough." in prompt and "Answer briefly." in prompt
        assert generator.model_name and len(generator.model_sha256) == 64

    def test_generation_is_deterministic_and_streams_the_same_text(self, generator: Generator) -> None:
        prompt = generator.chat_prompt("Suggest a treatment for community-acquired pneumonia.")
        text = generator.generate(prompt, max_new_tokens=8)
        assert text == generator.generate(prompt, max_new_tokens=8)
        assert "".join(generator.stream(prompt, max_new_tokens=8)) == text

    def test_every_candidate_gets_a_score_in_order(self, generator: Generator) -> None:
        prompt = generator.chat_prompt("Fever, cough and crackles. Most likely diagnosis?") + "Diagnosis:"
        scores = generator.score_candidates(prompt, CANDIDATES)
        assert len(scores) == len(CANDIDATES)
        for score in scores:
            assert score.tokens > 0 and score.total_logprob <= 0 and score.mean_logprob <= 0
        backwards = generator.score_candidates(prompt, list(reversed(CANDIDATES)))[::-1]
        assert [s.total_logprob for s in backwards] == pytest.approx([s.total_logprob for s in scores], abs=1e-4)

    def test_a_shared_static_head_changes_no_score(self, generator: Generator) -> None:
        system = "You are a careful clinical assistant."
        head = generator.chat_prompt("\x00USER\x00", system=system).split("\x00USER\x00")[0]
        prompt = generator.chat_prompt("Night wheeze.", system=system)
        plain = generator.score_candidates(prompt, CANDIDATES)
        cached = generator.score_candidates(prompt, CANDIDATES, static_head=head)
        assert [s.total_logprob for s in cached] == pytest.approx([s.total_logprob for s in plain], abs=1e-4)

    def test_no_adapter_means_the_base_model_without_a_projector(self, generator: Generator) -> None:
        assert generator.projector_encoder(None) is None
        prompt = generator.chat_prompt("Cough.")
        assert generator.generate(prompt, max_new_tokens=4, adapter=None) == generator.generate(
            prompt, max_new_tokens=4
        )

    def test_an_adapter_it_never_loaded_is_refused(self, generator: Generator) -> None:
        with pytest.raises(UnknownAdapterError):
            generator.generate(generator.chat_prompt("Cough."), max_new_tokens=4, adapter="a404")


class TestTransformersGenerator(GeneratorContract):
    @pytest.fixture
    def generator(self, tiny_lm_dir: Path) -> Generator:
        return TransformersGenerator(BaseModel(path=tiny_lm_dir, name="tiny-smollm", sha256="0" * 64))
