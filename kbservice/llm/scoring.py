"""Candidate scoring: log-likelihood of each continuation given one shared prompt, in one batched pass.

The prompt is run once; its key/value cache is repeated across the batch of candidates, so the cost is
one prompt forward plus one forward over the (short) candidates together, never one full forward each.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ContinuationScore:
    total_logprob: float  # sum over the continuation's tokens
    tokens: int

    @property
    def mean_logprob(self) -> float:
        return self.total_logprob / max(self.tokens, 1)


@torch.no_grad()
def score_continuations(
    model: torch.nn.Module, *, prompt_ids: Sequence[int], continuations: Sequence[Sequence[int]], pad_id: int = 0
) -> list[ContinuationScore]:
    """log P(continuation | prompt) for each continuation, reusing the prompt's KV cache."""
    if not prompt_ids:
        raise ValueError("the prompt must have at least one token")
    if not continuations:
        return []
    if any(len(c) == 0 for c in continuations):
        raise ValueError("every continuation needs at least one token")
    device = next(model.parameters()).device
    prompt = torch.tensor([list(prompt_ids)], device=device)
    prefix = model(input_ids=prompt, use_cache=True)
    first_logprobs = torch.log_softmax(prefix.logits[0, -1].float(), dim=-1)  # predicts each first token

    batch = len(continuations)
    width = max(len(c) for c in continuations)
    ids = torch.full((batch, width), pad_id, dtype=torch.long, device=device)
    real = torch.zeros((batch, width), dtype=torch.bool, device=device)
    for row, continuation in enumerate(continuations):
        ids[row, : len(continuation)] = torch.tensor(list(continuation), device=device)
        real[row, : len(continuation)] = True
    cache = copy.deepcopy(prefix.cache)
    cache.batch_repeat_interleave(batch)
    attention = torch.cat([torch.ones((batch, len(prompt_ids)), dtype=torch.long, device=device), real.long()], dim=1)
    positions = torch.arange(len(prompt_ids), len(prompt_ids) + width, device=device).expand(batch, -1)
    out = model(input_ids=ids, cache=cache, attention_mask=attention, position_ids=positions, use_cache=True)
    logprobs = torch.log_softmax(out.logits.float(), dim=-1)  # position t predicts token t+1

    scores = []
    for row, continuation in enumerate(continuations):
        total = first_logprobs[continuation[0]].item()
        for t in range(1, len(continuation)):
            total += logprobs[row, t - 1, continuation[t]].item()
        scores.append(ContinuationScore(total_logprob=total, tokens=len(continuation)))
    return scores
