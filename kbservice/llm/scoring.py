"""Candidate scoring: log-likelihood of each continuation given one shared prompt.

The prompt and all candidates are packed into ONE sequence: an attention mask (tree attention) lets each
prompt token see the prompt causally and each candidate token see the whole prompt plus the earlier tokens
of its own candidate only, and position ids restart at the prompt's end for every candidate. So the
shared prompt is computed once and each candidate only costs its own tokens, in a single forward pass
(no padding, no copies of the cache per candidate), never one full forward each. A static head of the
prompt (the system turn) can be cached across requests, so only the request's own tokens run per call.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kbservice.llm.protocols import ContinuationScore


@dataclass
class PrefixCache:
    """The key/value cache of a prompt head that many prompts share (e.g. the system turn)."""

    ids: tuple[int, ...]
    cache: object


@torch.no_grad()
def encode_prefix(model: torch.nn.Module, ids: Sequence[int]) -> PrefixCache:
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([list(ids)], device=device), use_cache=True)
    return PrefixCache(ids=tuple(ids), cache=out.cache)


@torch.no_grad()
def score_continuations(
    model: torch.nn.Module,
    *,
    prompt_ids: Sequence[int],
    continuations: Sequence[Sequence[int]],
    head: PrefixCache | None = None,
    soft: tuple[Sequence[int], torch.Tensor] | None = None,
) -> list[ContinuationScore]:
    """log P(continuation | prompt) for each continuation, in ONE forward pass over the prompt followed by
    every candidate (tree attention). `head`, if it is a proper prefix of the prompt, is not run again.
    `soft` = (prompt positions, embeddings): those positions take the given input embeddings (image soft
    tokens) instead of their token's.

    Logits are computed only where a score needs them (the prompt's last position and each candidate's
    non-final positions): on a 135M model the vocabulary projection costs as much as the layers."""
    if not prompt_ids:
        raise ValueError("the prompt must have at least one token")
    if not continuations:
        return []
    if any(len(c) == 0 for c in continuations):
        raise ValueError("every continuation needs at least one token")
    device = next(model.parameters()).device
    prompt_length = len(prompt_ids)
    cache = None
    done = 0  # prompt tokens already in the cache
    soft_start = min(soft[0]) if soft is not None and len(soft[0]) else prompt_length
    if (
        head is not None
        and len(head.ids) < prompt_length
        and len(head.ids) <= soft_start
        and tuple(prompt_ids[: len(head.ids)]) == head.ids
    ):
        cache = copy.deepcopy(head.cache)  # this request's tokens extend the copy, never the shared head
        done = len(head.ids)
    rest = list(prompt_ids[done:])

    owner = torch.tensor([i for i, c in enumerate(continuations) for _ in c], device=device)
    offset = torch.tensor([t for c in continuations for t in range(len(c))], device=device)
    packed = len(owner)
    new = len(rest) + packed
    allowed = torch.zeros((new, done + new), dtype=torch.bool, device=device)
    allowed[:, :done] = True  # everything sees the cached head
    allowed[: len(rest), done : done + len(rest)] = torch.ones(len(rest), len(rest), dtype=torch.bool).tril()
    allowed[len(rest) :, done : done + len(rest)] = True  # candidates see the whole prompt ...
    allowed[len(rest) :, done + len(rest) :] = (owner[:, None] == owner[None, :]) & (
        offset[None, :] <= offset[:, None]
    )  # ... and the earlier tokens of their own candidate only
    mask = torch.zeros((1, 1, new, done + new), device=device)
    mask.masked_fill_(~allowed, torch.finfo(mask.dtype).min)
    positions = torch.cat([torch.arange(done, prompt_length, device=device), prompt_length + offset])
    starts = [len(rest)]  # where each candidate's tokens begin in the new sequence
    for continuation in continuations[:-1]:
        starts.append(starts[-1] + len(continuation))
    # Logits at the prompt's last token (predicts every first token) and at each candidate's non-final tokens.
    keep = [len(rest) - 1] + [
        start + t for start, c in zip(starts, continuations, strict=True) for t in range(len(c) - 1)
    ]
    input_ids = torch.tensor([rest + [token for c in continuations for token in c]], device=device)
    inputs: dict[str, torch.Tensor] = {"input_ids": input_ids}
    if soft is not None and len(soft[0]):
        embeds = model.get_input_embeddings()(input_ids)
        embeds[0, [p - done for p in soft[0]]] = soft[1].to(embeds.dtype)
        inputs = {"inputs_embeds": embeds}
    out = model(
        **inputs,
        cache=cache,
        attention_mask=mask,
        position_ids=positions[None],
        use_cache=cache is not None,
        logits_to_keep=torch.tensor(keep, device=device),
    )
    logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)  # row r: the distribution after keep[r]
    row_of = {position: row for row, position in enumerate(keep)}
    scores = []
    for start, continuation in zip(starts, continuations, strict=True):
        total = logprobs[0, continuation[0]].item()
        for t in range(1, len(continuation)):
            total += logprobs[row_of[start + t - 1], continuation[t]].item()
        scores.append(ContinuationScore(total_logprob=total, tokens=len(continuation)))
    return scores


@torch.no_grad()
def score_continuations_naive(
    model: torch.nn.Module, *, prompt_ids: Sequence[int], continuations: Sequence[Sequence[int]]
) -> list[ContinuationScore]:
    """The same scores the slow way, one full forward over prompt + continuation each: the benchmark's
    baseline and the reference the fast path is tested against."""
    device = next(model.parameters()).device
    scores = []
    for continuation in continuations:
        ids = torch.tensor([list(prompt_ids) + list(continuation)], device=device)
        # Only the logits that score the continuation (as the fast path does), so the comparison is fair.
        logits = model(input_ids=ids, logits_to_keep=len(continuation) + 1).logits[0, :-1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        total = sum(logprobs[t, token].item() for t, token in enumerate(continuation))
        scores.append(ContinuationScore(total_logprob=total, tokens=len(continuation)))
    return scores
