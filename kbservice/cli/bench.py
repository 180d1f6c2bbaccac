"""Benchmarks: ingest throughput, search latency, image encoder, candidate scoring, training, adapter hot
swap and HTTP load. Those that build a knowledge base do so in a temporary data directory."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kbservice.cli.app import JsonFlag, bench_app, err, out, print_json, print_measures, progress, state
from kbservice.errors import KBError
from kbservice.services import build_services, temporary_services


@bench_app.command("ingest")
def bench_ingest(
    corpus: Annotated[Path, typer.Option(help="MedQuAD medquad_answered.jsonl.")] = Path(
        "../shared/data/medquad/medquad_answered.jsonl"
    ),
    limit: Annotated[int | None, typer.Option(help="Use the first N answers only.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Whole-ingest throughput vs bare SentenceTransformer.encode on the same chunk texts (fresh data dir)."""
    from kbservice.evaluation.ingest_throughput import run_ingest_benchmark

    result = run_ingest_benchmark(corpus=corpus, limit=limit, settings=state.settings, console=err)
    if as_json:
        print_json(result)


@bench_app.command("search")
def bench_search(
    vectors: Annotated[int, typer.Option(help="Synthetic index size (random unit vectors).")] = 1_000_000,
    queries: Annotated[int, typer.Option(help="Timed queries.")] = 200,
    kinds: Annotated[str, typer.Option(help="Comma-separated index kinds to measure: pq, hnsw, flat.")] = "pq",
    as_json: JsonFlag = False,
) -> None:
    """Dense search latency and recall@10 vs exact search on a synthetic index, plus peak memory."""
    from kbservice.index.bench import run_search_benchmark

    result = run_search_benchmark(
        n_vectors=vectors,
        n_queries=queries,
        settings=state.settings.index,
        console=err,
        kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()),
    )
    if as_json:
        print_json(result)


@bench_app.command("images")
def bench_images(
    data: Annotated[Path, typer.Option("--data", help="pneumoniamnist.npz (train/val/test splits).")],
    as_json: JsonFlag = False,
) -> None:
    """The image encoder the update cycle trains, on PneumoniaMNIST as given: train split as image-only cases,
    validation split as the frozen evaluation set, test split untouched; accuracy and ROC AUC on test, training
    time, and image ingest throughput. Runs on a temporary data directory."""
    from kbservice.evaluation.pneumonia import pneumonia_benchmark

    with (
        temporary_services(state.settings) as (services, _),
        tempfile.TemporaryDirectory(prefix="kbservice-images-") as work,
    ):
        result = pneumonia_benchmark(services, data, Path(work), progress=progress())
    if as_json:
        print_json(result)
        return
    print_measures(result)


@bench_app.command("scoring")
def bench_scoring(
    cases_file: Annotated[Path, typer.Option("--cases", help="Cases (.jsonl/.csv) whose findings are the prompts.")],
    count: Annotated[int, typer.Option("--count", help="How many cases to time.")] = 10,
    as_json: JsonFlag = False,
) -> None:
    """Candidate scoring: the shared-prefix batched pass vs one full forward per candidate, on the same prompts
    (the knowledge base in --data-dir supplies the candidates and the retrieved context)."""
    from kbservice.recommend.bench import run_scoring_benchmark

    result = run_scoring_benchmark(state.services, cases_file, count=count, console=err)
    if as_json:
        print_json(result)


@bench_app.command("training")
def bench_training(
    cases_file: Annotated[Path, typer.Option("--cases", help="Labelled cases (case format): the new batch.")],
    count: Annotated[int, typer.Option("--count", help="Use the first N cases.")] = 500,
    as_json: JsonFlag = False,
) -> None:
    """One update cycle on COUNT new cases in a fresh temporary store: its training tokens/s against a bare
    PEFT loop on the same examples and model, the cycle's time by stage, and its peak memory."""
    from kbservice.evaluation.case_batches import ingest_first_cases
    from kbservice.learn.bench import run_training_benchmark

    with temporary_services(state.settings) as (services, tmp):
        ingest_first_cases(services, tmp, cases_file, count, progress=progress())
        result = run_training_benchmark(services, progress=progress())
    if as_json:
        print_json(result)
        return
    cycle, bare = result["update_cycle"], result["bare_peft_loop"]
    out.print(
        f"update cycle ({result['cases']} new cases, {result['status']}): {cycle['cycle_s']} s, "
        f"peak RSS {cycle['peak_rss_mb']} MB"
    )
    out.print(
        f"  training {cycle['training_tokens_per_s']} tok/s vs bare PEFT loop {bare['tokens_per_s']} tok/s: "
        f"{result['ratio']}x"
    )


@bench_app.command("swap")
def bench_swap(
    cases_file: Annotated[Path, typer.Option("--cases", help="Labelled cases (.jsonl) to build the store from.")],
    count: Annotated[int, typer.Option("--count", help="Use the first N cases (the adapter trains on them).")] = 100,
    clients: Annotated[int, typer.Option("--clients", help="Client threads sending requests continuously.")] = 4,
    seconds: Annotated[float, typer.Option("--seconds", help="Seconds of traffic before and after the promotion.")] = 5,
    preloaded: Annotated[
        bool, typer.Option("--preloaded/--cold", help="The promoted version already loaded (as `previous` is) or not.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Hot-swap time: a serving process answers CLIENTS continuous clients while an adapter is promoted;
    reports the time from promotion to the new champion being ready, first used and first answered."""
    from kbservice.evaluation.case_batches import ingest_first_cases
    from kbservice.learn.bench import run_swap_benchmark
    from kbservice.learn.update import run_update_cycle

    with temporary_services(state.settings) as (admin, tmp):
        ingest_first_cases(admin, tmp, cases_file, count, progress=progress())
        cycle = run_update_cycle(admin, triggered_by="bench-swap", progress=progress())
        if cycle.status != "promoted":
            raise KBError(f"the benchmark's adapter was not promoted: {cycle.reason}")
        admin.adapter_store.rollback(audit=admin.audit, actor="bench", reason="serve the base model first")
        serving = build_services(admin.settings)  # a second, long-lived set: nothing of a1 loaded yet
        try:
            result = run_swap_benchmark(
                admin, serving, clients=clients, before_s=seconds, after_s=seconds, preloaded=preloaded
            )
        finally:
            serving.close()
    if as_json:
        print_json(result)
        return
    out.print(
        f"{result['requests']} requests from {clients} clients, {result['failed_requests']} failed; promotion -> "
        f"adapter ready {result['watcher_ready_ms']} ms, first request on it {result['first_request_started_ms']} ms, "
        f"first answer from it {result['first_response_ms']} ms"
    )


@bench_app.command("api")
def bench_api(
    url: Annotated[str, typer.Option(help="The running service, e.g. http://127.0.0.1:8000.")],
    key: Annotated[str, typer.Option(envvar="KB_API_KEY", help="An API key with the clinician role or above.")],
    clients: Annotated[str, typer.Option(help="Comma-separated concurrency levels.")] = "1,4,16",
    seconds: Annotated[float, typer.Option(help="Duration of each level.")] = 20.0,
    kind: Annotated[str, typer.Option(help="search | recommend")] = "search",
    queries: Annotated[Path, typer.Option(help="MedQuAD JSONL: its questions are the queries.")] = Path(
        "../shared/data/medquad/medquad_answered.jsonl"
    ),
    as_json: JsonFlag = False,
) -> None:
    """Closed-loop load from this process against a running service: throughput, latency p50/p95/p99 and
    errors for each concurrency level."""
    from kbservice.api.loadtest import run_load

    if kind not in ("search", "recommend"):
        raise typer.BadParameter("kind must be search or recommend", param_hint="--kind")
    levels = [int(c) for c in clients.split(",") if c.strip()]
    result = run_load(url=url, key=key, kind=kind, levels=levels, seconds=seconds, queries_file=queries)
    if as_json:
        print_json(result)
        return
    table = Table("clients", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms")
    for row in result["levels"]:
        table.add_row(
            str(row["clients"]),
            str(row["requests"]),
            str(row["errors"]),
            f"{row['throughput']:.1f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p95_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
        )
    out.print(f"{kind} against {url}")
    out.print(table)
