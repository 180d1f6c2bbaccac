"""`kbservice bench training`: one update cycle against a bare PEFT loop on the same data and model.

A fresh temporary store gets the cases as one batch; one update cycle runs (retrieval, training, gate,
calibration), then a plain PEFT loop trains a fresh adapter on exactly the examples the cycle trained on.
Tokens/s compare the training phases; the cycle's end-to-end time and peak memory are reported too.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kbservice.config import LearnSettings
from kbservice.learn.cycle_data import training_target
from kbservice.learn.packing import TrainingExample, tokenize
from kbservice.learn.train import TrainingResult, load_base, lora_model
from kbservice.learn.update import run_update_cycle
from kbservice.progress import NoProgress, Progress
from kbservice.recommend.request import request_for_case

if TYPE_CHECKING:
    from kbservice.services import Services


def run_training_benchmark(services: Services, *, progress: Progress | None = None) -> dict[str, Any]:
    """Runs on a store that already holds the new cases (and nothing trained yet)."""
    progress = progress or NoProgress()
    started = time.perf_counter()
    cycle = run_update_cycle(services, triggered_by="bench-training", progress=progress)
    cycle_s = time.perf_counter() - started
    peak_after_cycle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not cycle.training or cycle.adapter_version is None:
        return {"cycle": cycle.to_json(), "note": "the cycle trained nothing"}
    shown = services.registry.show(cycle.adapter_version)
    version = shown["knowledge_version"]
    by_id = {c.case_id: c for c in services.case_store.cases(as_of=version)}
    examples = []
    for case_id in shown["train_case_ids"] + shown["replay_case_ids"]:
        case = by_id[case_id]
        evidence = services.recommender.evidence(
            request_for_case(case, mode="rag", as_of=version), exclude_chunk_ids=[case.chunk_id]
        )
        examples.append(TrainingExample(case_id=case_id, prompt=evidence.prompt, target=training_target(case)))
    bare = bare_peft_loop(services.base_model.path, examples, settings=services.settings.learn)
    training = cycle.training
    return {
        "cases": cycle.new_cases,
        "split": asdict(cycle.split) if cycle.split else None,
        "status": cycle.status,
        "reason": cycle.reason,
        "update_cycle": {
            "training_tokens_per_s": training["tokens_per_s"],
            "tokens": training["tokens"],
            "target_tokens": training["target_tokens"],
            "sequences": training["sequences"],
            "training_s": training["seconds"],
            "cycle_s": round(cycle_s, 1),
            "end_to_end_tokens_per_s": round(training["tokens"] / cycle_s, 1),
            "stages_s": cycle.timings,
            "peak_rss_mb": round(peak_after_cycle, 1),
        },
        "bare_peft_loop": {
            "tokens_per_s": round(bare.tokens_per_s, 1),
            "tokens": bare.tokens,
            "seconds": round(bare.seconds, 1),
            "steps": bare.steps,
        },
        "ratio": round(training["tokens_per_s"] / bare.tokens_per_s, 3) if bare.tokens_per_s else None,
        "metrics": cycle.metrics,
    }


def run_swap_benchmark(
    admin: Services,
    serving: Services,
    *,
    clients: int = 4,
    before_s: float = 5.0,
    after_s: float = 5.0,
    preloaded: bool = False,
) -> dict[str, Any]:
    """`serving` (a separate, long-lived set of services, as another process would hold) answers requests
    from `clients` threads continuously; `admin` promotes its previous adapter meanwhile. Measures the time
    from the promotion's commit to the watcher having the new adapter ready, to the first request started
    on it, and to the first response from it; counts failed requests. `preloaded`: the watcher keeps the
    version to be promoted (the `previous` one) loaded beforehand, as it does in service; else the swap
    includes loading it cold."""
    import threading

    from kbservice.learn.hot_swap import ChampionWatcher
    from kbservice.recommend.answer import recommend
    from kbservice.recommend.request import RecommendationRequest

    target = admin.registry.store.alias("previous")
    if target is None:
        raise ValueError("the swap benchmark needs a previous adapter to promote")
    findings = [c.findings for c in admin.case_store.cases(as_of=admin.retriever.resolve_version(None))][:50]
    recommend(serving, RecommendationRequest(findings=findings[0]), actor="bench", with_treatment=False)  # warm-up
    watcher = ChampionWatcher(serving, preload_previous=preloaded).start()
    served: list[tuple[float, float, str | None]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        i = n
        while not stop.is_set():
            started = time.perf_counter()
            try:
                response = recommend(
                    serving,
                    RecommendationRequest(findings=findings[i % len(findings)]),
                    actor="bench",
                    with_treatment=False,
                )
                served.append((started, time.perf_counter(), response.provenance.adapter_version))
            except Exception as error:
                failures.append(f"{type(error).__name__}: {error}")
            i += clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    time.sleep(before_s)
    promoted_at = time.perf_counter()  # taken before the call: every figure below is an upper bound
    admin.adapter_store.promote(target, audit=admin.audit, actor="bench", reason="swap benchmark")
    promote_call_ms = (time.perf_counter() - promoted_at) * 1000
    time.sleep(after_s)
    stop.set()
    for t in threads:
        t.join()
    watcher.stop()
    on_new = [(s, f) for s, f, a in served if a == target]
    swap = next((w for w in watcher.swaps if w.version == target), None)
    latencies = sorted(f - s for s, f, _ in served)
    return {
        "clients": clients,
        "requests": len(served),
        "failed_requests": len(failures),
        "failures": failures[:5],
        "promoted": target,
        "preloaded": preloaded,
        "promote_call_ms": round(promote_call_ms, 1),
        "watcher_ready_ms": round((swap.ready_at - promoted_at) * 1000, 1) if swap else None,
        "adapter_load_ms": round((swap.ready_at - swap.seen_at) * 1000, 1) if swap else None,
        "first_request_started_ms": round((min(s for s, _ in on_new) - promoted_at) * 1000, 1) if on_new else None,
        "first_response_ms": round((min(f for _, f in on_new) - promoted_at) * 1000, 1) if on_new else None,
        "old_adapter_requests_after_promotion": sum(1 for s, f, a in served if s > promoted_at and a != target),
        "request_latency_s": {
            "p50": round(latencies[len(latencies) // 2], 3),
            "p95": round(latencies[int(len(latencies) * 0.95)], 3),
        }
        if latencies
        else None,
    }


def bare_peft_loop(model_path: Path, examples: Sequence[TrainingExample], *, settings: LearnSettings) -> TrainingResult:
    """The benchmark's reference: a plain PEFT loop, one example per step (no padding), the model's own
    loss over the target tokens (labels -100 on the prompt), same data, LoRA config and optimiser."""
    torch.manual_seed(settings.seed)
    tokenizer, base = load_base(model_path)
    model = lora_model(base, settings, init_adapter=None)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    result = TrainingResult(
        examples=len(examples), sequences=len(examples), steps=0, tokens=0, target_tokens=0, seconds=0.0
    )
    for prompt, target, _ in tokenize(tokenizer, examples, max_tokens=settings.pack_tokens):
        ids = torch.tensor([prompt + target])
        labels = torch.tensor([[-100] * len(prompt) + target])
        started = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        result.seconds += time.perf_counter() - started
        result.steps += 1
        result.tokens += ids.shape[1]
        result.target_tokens += len(target)
        result.losses.append(float(loss.item()))
    return result
