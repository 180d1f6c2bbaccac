"""The kbservice command line: a thin layer over the same functions the API calls."""

from __future__ import annotations

import getpass
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from kbservice.config import Settings, load_settings
from kbservice.errors import IngestError, KBError
from kbservice.progress import NoProgress, Progress
from kbservice.services import Services, build_services, initialise

app = typer.Typer(
    help="kbservice: a versioned medical knowledge base with hybrid search and cited, calibrated, audited "
    "diagnosis and treatment recommendations (demonstration software, not a medical device).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ingest_app = typer.Typer(
    help="Add knowledge: guideline files (Markdown, text, HTML, PDF, JSONL) or labelled cases (JSONL, CSV).",
    no_args_is_help=True,
)
index_app = typer.Typer(help="Check or rebuild the vector index (a projection of SQL).", no_args_is_help=True)
bench_app = typer.Typer(help="Measure ingest throughput, search latency and candidate scoring.", no_args_is_help=True)
eval_app = typer.Typer(
    help="Measure quality on real data: retrieval, de-identification, diagnosis, treatment.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="The hash-chained audit log of knowledge changes and recommendations; show and replay.", no_args_is_help=True
)
models_app = typer.Typer(help="The local language model (base model files and checksum).", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
app.add_typer(index_app, name="index")
app.add_typer(bench_app, name="bench")
app.add_typer(eval_app, name="eval")
app.add_typer(models_app, name="models")
app.add_typer(audit_app, name="audit")

# Piped output (files, tests, other programs) gets wide tables instead of rich's 80-column default.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (documented in the README).")]


class _State:
    settings: Settings
    quiet: bool = False
    _services: Services | None = None

    @property
    def services(self) -> Services:
        if self._services is None:
            self._services = build_services(self.settings)
        return self._services


state = _State()


class RichProgress:
    """Progress bars on stderr; used only when stderr is a terminal and --quiet is off."""

    @contextmanager
    def task(self, description: str, *, total: int):  # type: ignore[no-untyped-def]
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            task_id = bar.add_task(description, total=total)

            def advance(n: int, status: str | None = None) -> None:
                if status:
                    bar.update(task_id, description=f"{description} [dim]{status}[/]")
                bar.advance(task_id, n)

            yield advance


def _progress() -> Progress:
    return RichProgress() if not state.quiet and sys.stderr.isatty() else NoProgress()


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def _author(author: str | None) -> str:
    if author:
        return author
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@app.callback()
def _global(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", envvar="KB_DATA_DIR", help="Data directory (default: ~/.local/share/kbservice)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    state.settings = load_settings(data_dir=data_dir)
    state.quiet = quiet


@app.command()
def init() -> None:
    """Create the data directory and migrate the database to the current schema (idempotent)."""
    revision = initialise(state.settings)
    out.print(f"initialised {state.settings.data_dir} (database at migration {revision})")


@ingest_app.command("guidelines")
def ingest_guidelines_command(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (walked recursively).")],
    source: Annotated[
        str | None, typer.Option(help="Source name (collection); part of each document's identity.")
    ] = None,
    author: Annotated[
        str | None, typer.Option(help="Author recorded on the version (default: your user name).")
    ] = None,
    message: Annotated[str | None, typer.Option(help="Message recorded on the version.")] = None,
    skip_bad: Annotated[
        bool,
        typer.Option("--skip-bad", help="Ingest the good files and report the bad ones (default: all or nothing)."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Ingest guideline files as ONE new knowledge version. A bad file aborts the whole batch unless --skip-bad;
    identical documents are skipped; a changed document with the same identity supersedes the old one."""
    from kbservice.ingest.guidelines import ingest_guidelines

    services = state.services
    report = ingest_guidelines(
        paths,
        **services.ingest_targets(),
        source=source,
        author=_author(author),
        message=message,
        skip_bad=skip_bad,
        progress=_progress(),
    )
    if as_json:
        _print_json(report.to_json())
        return
    for path, reason in report.rejected:
        err.print(f"[yellow]skipped[/yellow] {path}: {reason}")
    if report.version is None:
        out.print(f"nothing changed: {len(report.unchanged)} document(s) already present with identical content")
        return
    out.print(
        f"version {report.version}: {len(report.added)} added, {len(report.superseded)} superseded, "
        f"{len(report.unchanged)} unchanged, {report.chunks} chunks in {report.seconds:.1f}s"
    )


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="How many hits.")] = 10,
    as_of: Annotated[int | None, typer.Option("--as-of", help="Search the knowledge valid at this version.")] = None,
    mode: Annotated[str, typer.Option(help="dense | lexical | hybrid")] = "hybrid",
    as_json: JsonFlag = False,
) -> None:
    """Search guideline passages (hybrid dense + lexical by default) at the newest or a given version."""
    if mode not in ("dense", "lexical", "hybrid"):
        raise typer.BadParameter("mode must be dense, lexical or hybrid", param_hint="--mode")
    result = state.services.retriever.search(query, k=k, as_of=as_of, mode=mode)  # type: ignore[arg-type]
    if as_json:
        _print_json([hit.to_json() for hit in result.hits])
        return
    if result.version is None:
        out.print("the knowledge base is empty: ingest something first (`kbservice ingest guidelines PATH`)")
        return
    out.print(f"[bold]{len(result.hits)} hit(s)[/bold] at version {result.version} ({result.mode})")
    for rank, hit in enumerate(result.hits, start=1):
        path = hit.heading_path if hit.heading_path[:1] == (hit.title,) else (hit.title, *hit.heading_path)
        meta = f"score {hit.score:.4f} · chunk {hit.chunk_id} · doc {hit.document_id}"
        out.print(f"\n[bold]{rank}. {' > '.join(path)}[/bold]  [dim]{meta}[/dim]")
        snippet = " ".join(hit.text.split())
        out.print(f"   {snippet[:300]}{'…' if len(snippet) > 300 else ''}")


@app.command()
def versions(as_json: JsonFlag = False) -> None:
    """List knowledge versions, oldest first."""
    rows = state.services.store.versions()
    if as_json:
        _print_json([v.to_json() for v in rows])
        return
    table = Table("version", "parent", "created", "author", "documents", "chunks", "hash", "message")
    for v in rows:
        table.add_row(
            str(v.version),
            str(v.parent or "-"),
            v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            v.author,
            str(v.documents),
            str(v.chunks),
            v.content_hash[:12],
            v.message,
        )
    out.print(table if rows else "no versions yet")


@app.command()
def diff(
    v1: Annotated[int, typer.Argument(help="From version.")],
    v2: Annotated[int, typer.Argument(help="To version.")],
    as_json: JsonFlag = False,
) -> None:
    """Documents and chunks added and removed between two versions."""
    result = state.services.store.diff(v1, v2)
    if as_json:
        _print_json(result.to_json())
        return
    out.print(f"version {v1} -> {v2}: +{result.chunks_added} / -{result.chunks_removed} chunks")
    for doc in result.documents_added:
        out.print(f"  [green]+ {doc['document_id']}[/green] {doc['title']}  [dim]{doc['source_key']}[/dim]")
    for doc in result.documents_removed:
        out.print(f"  [red]- {doc['document_id']}[/red] {doc['title']}  [dim]{doc['source_key']}[/dim]")


@app.command()
def retract(
    document_id: Annotated[int, typer.Argument(help="The document to retract (see `kbservice documents`).")],
    reason: Annotated[str | None, typer.Option(help="Why; recorded as the version message.")] = None,
    author: Annotated[str | None, typer.Option(help="Recorded on the version (default: your user name).")] = None,
) -> None:
    """Make a new version in which the document is no longer valid (older versions still see it)."""
    services = state.services
    info = services.store.retract_document(
        document_id, author=_author(author), reason=reason or f"retract document {document_id}"
    )
    out.print(f"version {info.version}: document {document_id} retracted")


@app.command()
def documents(
    as_of: Annotated[
        int | None, typer.Option("--as-of", help="Documents valid at this version (default: newest).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the documents valid now (or at --as-of)."""
    store = state.services.store
    head = store.head()
    version = store.version(as_of).version if as_of is not None else (head.version if head else 0)
    docs = store.documents(as_of=version)
    if as_json:
        _print_json([d.to_json() for d in docs])
        return
    table = Table("id", "title", "source", "format", "chunks", "added in", "hash")
    for d in docs:
        table.add_row(
            str(d.document_id), d.title, d.source, d.format, str(d.chunks), str(d.version_added), d.content_hash[:12]
        )
    out.print(table if docs else "no documents")


@index_app.command("verify")
def index_verify(as_json: JsonFlag = False) -> None:
    """Check that the index snapshot plus the pending outbox equals SQL. Exit 1 if not. Writes nothing."""
    health = state.services.replica_unopened().verify()
    if as_json:
        _print_json(health.to_json())
    else:
        verdict = "[green]ok[/green]" if health.ok else "[red]NOT OK[/red]"
        out.print(
            f"index {verdict}: {health.index_vectors} vectors, {health.sql_chunks} chunks in SQL, "
            f"kind {health.index_kind}, applied outbox {health.applied_seq}/{health.outbox_seq}"
        )
        for problem in health.problems:
            out.print(f"  - {problem}")
    if not health.ok:
        raise typer.Exit(1)


@index_app.command("rebuild")
def index_rebuild(
    reembed: Annotated[
        bool, typer.Option("--reembed", help="Re-embed every chunk with the configured embedder first.")
    ] = False,
) -> None:
    """Rebuild the vector index from the embeddings stored in SQL (the source of truth)."""
    services = state.services
    replica = services.replica_unopened()
    progress = _progress()
    if reembed:
        from kbservice.ingest.reembed import reembed_all

        reembed_all(store=services.store, embedder=services.embedder, progress=progress)
    with progress.task("Rebuilding index", total=services.store.chunk_count()) as advance:
        manifest = replica.rebuild(progress=advance)
    out.print(f"index rebuilt: {manifest.vectors} vectors ({manifest.kind}), build {manifest.build_id}")


@audit_app.command("list")
def audit_list(
    limit: Annotated[int, typer.Option(min=1, help="At most this many entries, oldest first.")] = 100,
    after: Annotated[int, typer.Option(help="Start after this sequence number.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """List audit entries (seq, time, kind, actor, payload, hashes)."""
    entries = list(state.services.audit.store.entries(after_seq=after, limit=limit))
    if as_json:
        _print_json([entry.to_json() for entry in entries])
        return
    table = Table("seq", "time", "kind", "actor", "payload", "hash")
    for entry in entries:
        table.add_row(
            str(entry.seq), entry.created_at[:19], entry.kind, entry.actor, entry.payload[:80], entry.hash[:12]
        )
    out.print(table if entries else "no audit entries")


@audit_app.command("verify")
def audit_verify(as_json: JsonFlag = False) -> None:
    """Recompute the audit hash chain; exit 1 if any entry was altered, removed or reordered."""
    result = state.services.audit.verify()
    if as_json:
        _print_json(result.to_json())
    elif result.ok:
        out.print(f"audit log ok: {result.entries} entries, chain intact")
    else:
        out.print(f"[red]audit log NOT OK[/red] at entry {result.first_bad_seq}: {result.problem}")
    if not result.ok:
        raise typer.Exit(1)


@models_app.command("show")
def models_show(as_json: JsonFlag = False) -> None:
    """The base language model: its directory and sha256 (the packaged GGUF is converted on first use)."""
    from kbservice.llm.model_files import resolve_base_model

    model = resolve_base_model(model_path=state.settings.llm.model_path, cache_dir=state.settings.models_dir)
    if as_json:
        _print_json({"name": model.name, "path": str(model.path), "sha256": model.sha256})
    else:
        out.print(f"{model.name}\n  path   {model.path}\n  sha256 {model.sha256}")


@app.command()
def demo() -> None:
    """Build the starter knowledge base (demonstration guideline summaries and cases), run a few searches,
    calibrate, and answer and replay one recommendation."""
    from kbservice.demo.run import run_demo

    initialise(state.settings)
    run_demo(state.services, console=out, progress=_progress(), author="kbservice demo")


@bench_app.command("ingest")
def bench_ingest(
    corpus: Annotated[Path, typer.Option(help="MedQuAD medquad_answered.jsonl.")] = Path(
        "../shared/data/medquad/medquad_answered.jsonl"
    ),
    limit: Annotated[int | None, typer.Option(help="Use the first N answers only.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Whole-ingest throughput vs bare SentenceTransformer.encode on the same chunk texts (fresh data dir)."""
    from kbservice.ingest.bench import run_ingest_benchmark

    result = run_ingest_benchmark(corpus=corpus, limit=limit, settings=state.settings, console=err)
    if as_json:
        _print_json(result)


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
        _print_json(result)


@eval_app.command("retrieval")
def eval_retrieval(
    corpus: Annotated[Path, typer.Option(help="MedQuAD medquad_answered.jsonl.")] = Path(
        "../shared/data/medquad/medquad_answered.jsonl"
    ),
    sample: Annotated[int, typer.Option(help="How many questions (fixed seed).")] = 500,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 13,
    as_json: JsonFlag = False,
) -> None:
    """Recall@1, recall@10 and MRR of each mode on MedQuAD questions against the knowledge base in --data-dir
    (ingest the corpus first with `kbservice bench ingest`)."""
    from kbservice.retrieval_eval import evaluate_medquad

    result = evaluate_medquad(state.services, corpus=corpus, sample=sample, seed=seed, console=err)
    if as_json:
        _print_json(result)


@eval_app.command("deid")
def eval_deid(
    notes: Annotated[Path, typer.Option(help="MTSamples notes CSV.")] = Path("../shared/data/mtsamples/mtsamples.csv"),
    drugs: Annotated[Path, typer.Option(help="WHO essential medicines CSV (clinical terms that must survive).")] = Path(
        "../shared/data/who_eml_gnuhealth/who_eml_2017_gnuhealth.csv"
    ),
    count: Annotated[int, typer.Option("--notes-count", help="How many notes to seed.")] = 200,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 11,
    as_json: JsonFlag = False,
) -> None:
    """De-identification recall on real notes seeded with synthetic identifiers, and clinical-term preservation."""
    from kbservice.ingest.deid_eval import evaluate_deid

    result = evaluate_deid(notes_csv=notes, drugs_csv=drugs, notes=count, seed=seed)
    if as_json:
        _print_json(result)
        return
    out.print(
        f"{result['seeded_identifiers']} seeded identifiers in {result['notes']} notes: recall {result['recall']}"
    )
    out.print(f"clinical terms preserved: {result['clinical_preserved']} of {result['clinical_terms']}")
    for kind, recall in result["recall_by_type"].items():
        out.print(f"  {kind:<11} {recall}")


def main() -> None:
    try:
        app()
    except IngestError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True)
        sys.exit(1)
    except KBError as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    finally:
        if state._services is not None:
            state._services.close()
            state._services = None


# Commands for cases, recommendations, their audit/evaluation and the learning loop register themselves here.
import kbservice.cli_imaging  # noqa: E402
import kbservice.cli_learn  # noqa: E402
import kbservice.cli_recommend  # noqa: E402
import kbservice.cli_serve  # noqa: E402, F401
