"""`kbservice demo`: ingest the packaged demonstration guidelines, then show a few searches."""

from __future__ import annotations

from importlib.resources import as_file, files

from rich.console import Console

from kbservice.ingest.guidelines import ingest_guidelines
from kbservice.progress import Progress
from kbservice.services import Services

DEMO_SOURCE = "kbservice-demo"
DEMO_QUERIES = (
    "first-line antibiotic for mild community-acquired pneumonia",
    "which drugs reduce mortality in heart failure with reduced ejection fraction",
    "D-dimer and CT pulmonary angiography when embolism is suspected",
    "treatment of cystitis in pregnancy",
)


def run_demo(services: Services, *, console: Console, progress: Progress, author: str) -> None:
    """Ingests the starter guidelines (a no-op when already present) and prints the top hits of each query."""
    console.print(
        "[bold]kbservice demo[/bold] — starter knowledge base of [yellow]demonstration guideline summaries "
        "(not clinical advice)[/yellow]"
    )
    console.print(f"data directory: {services.settings.data_dir}")
    with as_file(files("kbservice.demo") / "guidelines") as folder:
        report = ingest_guidelines(
            [folder],
            store=services.store,
            embedder=services.embedder,
            replica=services.replica,
            settings=services.settings,
            source=DEMO_SOURCE,
            author=author,
            message="starter knowledge base",
            progress=progress,
        )
    if report.version is None:
        console.print(f"starter guidelines already present ({len(report.unchanged)} documents, unchanged)")
    else:
        console.print(
            f"ingested {len(report.added) + len(report.superseded)} guideline(s), {report.chunks} chunks "
            f"-> knowledge version {report.version} in {report.seconds:.1f}s"
        )
    for query in DEMO_QUERIES:
        result = services.retriever.search(query, k=3)
        console.print(f"\n[bold cyan]search:[/bold cyan] {query}  [dim](version {result.version}, hybrid)[/dim]")
        for rank, hit in enumerate(result.hits, start=1):
            snippet = " ".join(hit.text.split())
            console.print(
                f"  {rank}. [bold]{' > '.join(hit.heading_path) or hit.title}[/bold] [dim](score {hit.score:.4f})[/dim]"
            )
            console.print(f"     {snippet[:220]}{'…' if len(snippet) > 220 else ''}")
    console.print('\nnext: `kbservice search "your question"`, `kbservice versions`, `kbservice documents`')
