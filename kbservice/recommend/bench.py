"""`bench scoring`: shared-prefix batched candidate scoring vs one full forward per candidate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from kbservice.ingest.case_files import parse_case_file
from kbservice.recommend.request import request_for_case

if TYPE_CHECKING:
    from kbservice.services import Services


def run_scoring_benchmark(services: Services, cases_file: Path, *, count: int, console: Console) -> dict[str, Any]:
    """Times both ways on the same prompts and candidates (interleaved per case) and checks they agree."""
    drafts = parse_case_file(cases_file, labeled_by=None, max_chars=services.settings.ingest.max_case_field_chars)
    recommender = services.recommender
    generator = services.generator
    fast_s, naive_s, max_gap, prompt_tokens = [], [], 0.0, []
    recommender.features(request_for_case(drafts[0], mode="rag"))  # warm-up
    for draft in drafts[:count]:
        feats = recommender.features(request_for_case(draft, mode="rag"))
        prompt_tokens.append(len(generator.tokenizer(feats.prompt, add_special_tokens=False).input_ids))
        started = time.perf_counter()
        fast = generator.score_candidates(feats.prompt, feats.candidates)
        fast_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        naive = generator.score_candidates_naive(feats.prompt, feats.candidates)
        naive_s.append(time.perf_counter() - started)
        max_gap = max(max_gap, *(abs(a.total_logprob - b.total_logprob) for a, b in zip(fast, naive, strict=True)))
    result = {
        "cases": len(fast_s),
        "candidates": len(feats.candidates),
        "mean_prompt_tokens": round(sum(prompt_tokens) / len(prompt_tokens), 1),
        "shared_prefix_mean_s": round(sum(fast_s) / len(fast_s), 4),
        "one_forward_per_candidate_mean_s": round(sum(naive_s) / len(naive_s), 4),
        "speedup": round(sum(naive_s) / sum(fast_s), 2),
        "max_abs_logprob_difference": round(max_gap, 6),
    }
    table = Table("measure", "value")
    for key, value in result.items():
        table.add_row(key, str(value))
    console.print(table)
    return result
