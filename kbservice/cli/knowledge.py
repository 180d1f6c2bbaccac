"""Knowledge commands: init, guidelines in, search, versions and their diffs, retraction, documents, the
vector index, and the demo that builds the starter knowledge base."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kbservice.cli.app import (
    JsonFlag,
    app,
    author_or_user,
    check_version,
    err,
    index_app,
    ingest_app,
    out,
    print_json,
    progress,
    state,
)
from kbservice.services import initialise


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
        author=author_or_user(author),
        message=message,
        skip_bad=skip_bad,
        progress=progress(),
    )
    if as_json:
        print_json(report.to_json())
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
    as_of: Annotated[
        int | None, typer.Option("--as-of", callback=check_version, help="Search the knowledge valid at this version.")
    ] = None,
    mode: Annotated[str, typer.Option(help="dense | lexical | hybrid")] = "hybrid",
    as_json: JsonFlag = False,
) -> None:
    """Search guideline passages (hybrid dense + lexical by default) at the newest or a given version."""
    if mode not in ("dense", "lexical", "hybrid"):
        raise typer.BadParameter("mode must be dense, lexical or hybrid", param_hint="--mode")
    result = state.services.retriever.search(query, k=k, as_of=as_of, mode=mode)  # type: ignore[arg-type]
    if as_json:
        print_json([hit.to_json() for hit in result.hits])
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
        print_json([v.to_json() for v in rows])
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
    v1: Annotated[int, typer.Argument(callback=check_version, help="From version.")],
    v2: Annotated[int, typer.Argument(callback=check_version, help="To version.")],
    as_json: JsonFlag = False,
) -> None:
    """Documents and chunks added and removed between two versions."""
    result = state.services.store.diff(v1, v2)
    if as_json:
        print_json(result.to_json())
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
    info = state.services.store.retract_document(
        document_id, author=author_or_user(author), reason=reason or f"retract document {document_id}"
    )
    out.print(f"version {info.version}: document {document_id} retracted")


@app.command()
def documents(
    as_of: Annotated[
        int | None,
        typer.Option("--as-of", callback=check_version, help="Documents valid at this version (default: newest)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the documents valid now (or at --as-of)."""
    store = state.services.store
    head = store.head()
    version = store.version(as_of).version if as_of is not None else (head.version if head else 0)
    docs = store.documents(as_of=version)
    if as_json:
        print_json([d.to_json() for d in docs])
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
        print_json(health.to_json())
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
    bars = progress()
    if reembed:
        from kbservice.ingest.reembed import reembed_all

        reembed_all(store=services.store, embedder=services.embedder, progress=bars)
    with bars.task("Rebuilding index", total=services.store.chunk_count()) as advance:
        manifest = replica.rebuild(progress=advance)
    out.print(f"index rebuilt: {manifest.vectors} vectors ({manifest.kind}), build {manifest.build_id}")


@index_app.command("compact")
def index_compact() -> None:
    """Fold the snapshot's deltas (small files each ingest appends) into one new base snapshot."""
    replica = state.services.replica
    before = replica.manifest
    deltas = len(before.deltas) if before else 0
    manifest = replica.compact()
    out.print(
        f"index compacted: {deltas} delta(s) folded into a new base of {manifest.vectors} vectors "
        f"({manifest.kind}), build {manifest.build_id}"
    )


@app.command()
def demo() -> None:
    """Build the starter knowledge base (demonstration guideline summaries and cases), run a few searches,
    calibrate, and answer and replay one recommendation."""
    from kbservice.demo.run import run_demo

    initialise(state.settings)
    run_demo(state.services, console=out, progress=progress(), author="kbservice demo")
