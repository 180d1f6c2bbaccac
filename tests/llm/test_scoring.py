"""Batched prefix-cached scoring equals one full forward per candidate (on a tiny random Llama)."""

from __future__ import annotations

import pytest
import torch

from kbservice.llm.scoring import score_continuations


@pytest.fixture(scope="module")
def tiny_llama() -> torch.nn.Module:
    from tests.helpers import tiny_llama as build

    return build(vocab_size=97)


def naive(model: torch.nn.Module, prompt: list[int], continuation: list[int]) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + continuation])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return sum(logprobs[len(prompt) - 1 + i, token].item() for i, token in enumerate(continuation))


def test_matches_one_forward_per_candidate(tiny_llama: torch.nn.Module) -> None:
    prompt = [5, 17, 3, 88, 42, 9, 60, 1, 33]
    candidates = [[7], [12, 45, 3], [90, 2], [7, 7, 7, 7, 7], [64, 1, 3]]
    scores = score_continuations(tiny_llama, prompt_ids=prompt, continuations=candidates)
    for candidate, score in zip(candidates, scores, strict=True):
        assert score.total_logprob == pytest.approx(naive(tiny_llama, prompt, candidate), abs=1e-4)
        assert score.tokens == len(candidate)


def test_prompt_runs_once(tiny_llama: torch.nn.Module) -> None:
    calls: list[tuple[int, int]] = []
    handle = tiny_llama.register_forward_pre_hook(
        lambda _m, _args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        score_continuations(tiny_llama, prompt_ids=list(range(1, 40)), continuations=[[1], [2, 3], [4, 5, 6]] * 8)
    finally:
        handle.remove()
    assert calls == [(1, 39), (24, 3)]


def test_rejects_empty_inputs(tiny_llama: torch.nn.Module) -> None:
    assert score_continuations(tiny_llama, prompt_ids=[1, 2], continuations=[]) == []
    with pytest.raises(ValueError, match="at least one token"):
        score_continuations(tiny_llama, prompt_ids=[1], continuations=[[]])
