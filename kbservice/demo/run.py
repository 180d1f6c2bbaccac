"""`kbservice demo`: ingest the packaged demonstration guidelines and cases, search, calibrate, recommend."""

from __future__ import annotations

from importlib.resources import as_file, files

from rich.console import Console

from kbservice.ingest.cases import ingest_cases
from kbservice.ingest.guidelines import ingest_guidelines
from kbservice.progress import Progress
from kbservice.recommend.answer import calibration_for, recommend, replay
from kbservice.recommend.calibrate import calibrate
from kbservice.recommend.request import RecommendationRequest
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
            **services.ingest_targets(),
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
    _ingest_demo_cases(services, console=console, progress=progress, author=author)
    _recommend(services, console=console, progress=progress, author=author)
    console.print(
        '\nnext: `kbservice recommend --findings "..."`, `kbservice search "your question"`, `kbservice cases`, '
        "`kbservice audit list`, `kbservice versions`"
    )


DEMO_REQUEST = RecommendationRequest(
    findings="Three days of fever, cough with green sputum and right-sided chest pain on breathing; crackles at "
    "the right base; oxygen saturation 94%.",
    history="Smoker.",
    age=61,
    sex="M",
)


def _ingest_demo_cases(services: Services, *, console: Console, progress: Progress, author: str) -> None:
    if services.store.live_content_hashes(["case:demo-001"]):
        console.print("\nstarter cases already present")
        return
    with as_file(files("kbservice.demo") / "cases.jsonl") as path:
        report = ingest_cases(
            path,
            **services.ingest_targets(),
            labeled_by="kbservice demo",
            author=author,
            progress=progress,
        )
    console.print(f"\ningested {len(report.added)} demonstration case(s) -> knowledge version {report.version}")


def _recommend(services: Services, *, console: Console, progress: Progress, author: str) -> None:
    if calibration_for(services, mode="rag").calibration_id is None:
        console.print("calibrating diagnosis probabilities on the starter cases (leave-one-out)…")
        report = calibrate(services, progress=progress)
        metrics = report["metrics"]
        console.print(
            f"calibration {report['calibration_id']}: held-out accuracy {metrics['accuracy']:.2f}, "
            f"ECE {metrics['ece']:.3f} on {metrics['cases']} cases"
        )
    console.print(f"\n[bold cyan]recommend:[/bold cyan] {DEMO_REQUEST.findings}")
    response = recommend(services, DEMO_REQUEST, actor=author)
    for entry in response.differential[:3]:
        console.print(f"  {entry.probability:6.1%}  {entry.diagnosis}  [dim][{', '.join(entry.citations[:5])}][/dim]")
    if response.abstained:
        console.print(f"  abstained: {response.reason}")
    console.print(f"  treatment: {response.treatment.plan or response.treatment.note}")
    result = replay(services, response.id, actor=author)
    console.print(
        f"  stored as {response.id} (knowledge v{response.provenance.knowledge_version}); "
        f"replay {'reproduces it exactly' if result.identical else 'DIFFERS'}"
    )
