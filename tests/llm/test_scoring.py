"""Packed, prefix-cached scoring equals one full forward per candidate (on a tiny random Llama)."""

from __future__ import annotations

import pytest
import torch

from kbservice.llm.scoring import encode_prefix, score_continuations, score_continuations_naive


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
    # One forward over the prompt and all 24 candidates packed into a single row (39 + 8 x (1+2+3) tokens).
    assert calls == [(1, 39 + 48)]


def test_rejects_empty_inputs(tiny_llama: torch.nn.Module) -> None:
    assert score_continuations(tiny_llama, prompt_ids=[1, 2], continuations=[]) == []
    with pytest.raises(ValueError, match="at least one token"):
        score_continuations(tiny_llama, prompt_ids=[1], continuations=[[]])


def test_shared_head_gives_the_same_scores_and_skips_its_tokens(tiny_llama: torch.nn.Module) -> None:
    head_ids = [11, 12, 13, 14, 15, 16]
    prompt = [*head_ids, 40, 41, 42]
    candidates = [[7], [12, 45, 3], [90, 2]]
    head = encode_prefix(tiny_llama, head_ids)
    calls: list[tuple[int, int]] = []
    handle = tiny_llama.register_forward_pre_hook(
        lambda _m, _args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        with_head = score_continuations(tiny_llama, prompt_ids=prompt, continuations=candidates, head=head)
    finally:
        handle.remove()
    assert calls == [(1, 3 + 6)]  # only the request's own 3 tokens and the candidates ran
    reference = score_continuations_naive(tiny_llama, prompt_ids=prompt, continuations=candidates)
    for fast, slow in zip(with_head, reference, strict=True):
        assert fast.total_logprob == pytest.approx(slow.total_logprob, abs=1e-4)
    # The shared head is not extended by a request: a second request with another tail still matches.
    other = [*head_ids, 70]
    again = score_continuations(tiny_llama, prompt_ids=other, continuations=candidates, head=head)
    expected = score_continuations_naive(tiny_llama, prompt_ids=other, continuations=candidates)
    for fast, slow in zip(again, expected, strict=True):
        assert fast.total_logprob == pytest.approx(slow.total_logprob, abs=1e-4)
