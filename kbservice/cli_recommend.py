"""CLI commands for cases, recommendations, calibration, their audit trail and their evaluation.

Registered on the Typer apps of kbservice.cli (imported there); kept apart so each file stays readable.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kbservice.cli import (
    JsonFlag,
    _author,
    _print_json,
    _progress,
    app,
    audit_app,
    bench_app,
    err,
    eval_app,
    ingest_app,
    out,
    state,
)
from kbservice.errors import KBError
from kbservice.services import Services, build_services, initialise

ModeOption = Annotated[
    str, typer.Option("--mode", help="rag (retrieval + model + similar cases) | no-rag (model alone)")
]


@contextmanager
def _temporary_services() -> Iterator[tuple[Services, Path]]:
    """Services on a fresh temporary data directory (SQLite) that share the configured models."""
    from kbservice.llm.model_files import resolve_base_model

    # The converted model stays in the real data directory: convert once, not once per evaluation.
    base = resolve_base_model(model_path=state.settings.llm.model_path, cache_dir=state.settings.models_dir)
    llm = state.settings.llm.model_copy(update={"model_path": base.path})
    with tempfile.TemporaryDirectory(prefix="kbservice-eval-") as tmp:
        settings = state.settings.model_copy(update={"data_dir": Path(tmp), "database_url": None, "llm": llm})
        initialise(settings)
        services = build_services(settings)
        try:
            yield services, Path(tmp)
        finally:
            services.close()


def _check_mode(mode: str) -> str:
    if mode not in ("rag", "no-rag"):
        raise typer.BadParameter("mode must be rag or no-rag", param_hint="--mode")
    return mode


@ingest_app.command("cases")
def ingest_cases_command(
    path: Annotated[Path, typer.Argument(help="A .jsonl or .csv file of cases (see the README for the fields).")],
    labeled_by: Annotated[
        str | None, typer.Option("--labeled-by", help="Who labelled the cases, for rows without labeled_by.")
    ] = None,
    author: Annotated[
        str | None, typer.Option(help="Author recorded on the version (default: your user name).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ingest labelled cases as ONE new knowledge version, de-identified before storage. Any bad row (named by
    line and field) or an already stored case id aborts the whole file: nothing is stored."""
    from kbservice.ingest.cases import ingest_cases

    services = state.services
    report = ingest_cases(
        path,
        **services.ingest_targets(),
        labeled_by=labeled_by,
        author=_author(author),
        progress=_progress(),
    )
    if as_json:
        _print_json(report.to_json())
        return
    out.print(f"version {report.version}: {len(report.added)} case(s) added in {report.seconds:.1f}s")


@app.command()
def cases(
    as_of: Annotated[int | None, typer.Option("--as-of", help="Cases valid at this version (default: newest).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the stored cases (after de-identification) with their store id and the version that added them."""
    services = state.services
    if as_of is not None:
        version: int | None = services.store.version(as_of).version  # a clear error for an unknown version
    else:
        head = services.store.head()
        version = head.version if head else None
    rows = services.case_store.cases(as_of=version) if version is not None else []
    if as_json:
        image_ids = services.image_store.ids_by_case([case.case_id for case in rows])
        _print_json([case.to_json() | {"image_ids": image_ids.get(case.case_id, [])} for case in rows])
        return
    table = Table("case_id", "id", "version", "diagnosis", "age", "sex", "findings")
    for case in rows:
        table.add_row(
            str(case.case_id),
            case.id,
            str(case.version_added),
            "; ".join(case.diagnosis),
            case.age or "-",
            case.sex or "-",
            case.findings[:70],
        )
    out.print(table if rows else "no cases: ingest some with `kbservice ingest cases FILE`")


@app.command()
def recommend(
    findings: Annotated[
        str, typer.Option("--findings", help="The patient's findings, in plain text (optional with --image).")
    ] = "",
    image: Annotated[
        list[Path] | None,
        typer.Option("--image", help="An X-ray, CT or MRI image (DICOM, PNG, JPEG, NIfTI); repeat for several."),
    ] = None,
    history: Annotated[str | None, typer.Option("--history", help="Relevant history.")] = None,
    age: Annotated[int | None, typer.Option("--age", min=0, max=130, help="Age in years.")] = None,
    sex: Annotated[str | None, typer.Option("--sex", help="F or M.")] = None,
    as_of: Annotated[
        int | None, typer.Option("--as-of", help="Answer from the knowledge valid at this version.")
    ] = None,
    adapter: Annotated[
        str | None, typer.Option("--adapter", help="Adapter version, or `none` for the base model (default: champion).")
    ] = None,
    mode: ModeOption = "rag",
    no_treatment: Annotated[bool, typer.Option("--no-treatment", help="Skip the treatment plan (faster).")] = False,
    actor: Annotated[str | None, typer.Option(help="Who asks, for the audit log (default: your user name).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """A differential diagnosis with calibrated probabilities and a cited treatment plan (demonstration
    software, not a medical device). Every answer is stored and audited; replay it with `audit replay`.
    Images add similar prior cases by image (sources of kind image_case) once an image encoder exists."""
    from kbservice.cli_imaging import request_images
    from kbservice.recommend.answer import recommend as run_recommend
    from kbservice.recommend.request import RecommendationRequest

    if sex is not None and sex.upper() not in ("F", "M"):
        raise typer.BadParameter("sex must be F or M", param_hint="--sex")
    request = RecommendationRequest(
        findings=findings,
        history=history,
        age=age,
        sex=sex.upper() if sex else None,
        as_of=as_of,
        adapter=adapter,
        mode=_check_mode(mode),  # type: ignore[arg-type]
        images=request_images(image or []),
    )
    response = run_recommend(state.services, request, actor=_author(actor), with_treatment=not no_treatment)
    if as_json:
        _print_json(response)
        return
    _print_recommendation(response)


def _print_recommendation(response: dict) -> None:
    provenance = response["provenance"]
    out.print(
        f"[bold]{response['id']}[/bold]  [dim]knowledge v{provenance['knowledge_version']} · "
        f"{provenance['base_model']} · adapter {provenance['adapter_version'] or 'none'} · "
        f"calibration {provenance['calibration_id'] or 'default (uncalibrated)'}[/dim]"
    )
    out.print("[yellow]demonstration output, not clinical advice[/yellow]")
    if response["abstained"]:
        out.print(f"[red]abstained:[/red] {response['reason']}")
    if response["images"]["note"]:
        out.print(f"[yellow]{response['images']['note']}[/yellow]")
    out.print("\n[bold]Differential diagnosis[/bold]")
    for entry in response["differential"]:
        cites = ", ".join(entry["citations"][:6]) or "no supporting source"
        out.print(f"  {entry['probability']:6.1%}  {entry['diagnosis']}  [dim][{cites}][/dim]")
    treatment = response["treatment"]
    out.print("\n[bold]Treatment plan[/bold]")
    out.print(f"  {treatment['plan'] or treatment.get('note') or '-'}")
    out.print("\n[bold]Sources[/bold]")
    for source in response["sources"]:
        label = source["title"] + (
            f" (diagnosis: {'; '.join(source['diagnosis'])})" if source["kind"] == "case" else ""
        )
        out.print(f"  [{source['id']}] {source['kind']:<9} {label[:100]}")


@app.command()
def calibrate(
    mode: ModeOption = "rag",
    sample: Annotated[
        int | None, typer.Option(help="Held-out cases to fit on (default: recommend.calibration_cases).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Fit the probability calibration (fusion weights) on held-out labelled cases of the knowledge base,
    each answered with itself left out of retrieval; stored for this model, adapter and prompt version."""
    from kbservice.recommend.calibrate import calibrate as run_calibrate

    report = run_calibrate(state.services, mode=_check_mode(mode), sample=sample, seed=seed, progress=_progress())  # type: ignore[arg-type]
    if as_json:
        _print_json(report)
        return
    metrics = report["metrics"]
    out.print(
        f"calibration {report['calibration_id']} ({report['mode']}) on {metrics['cases']} held-out cases: "
        f"accuracy {metrics['accuracy']:.3f}, ECE {metrics['ece']:.3f}, NLL {metrics['nll']:.3f}"
    )
    for name, weight in report["weights"].items():
        out.print(f"  {name:<20} {weight:8.3f}")


@audit_app.command("show")
def audit_show(
    recommendation_id: Annotated[str, typer.Argument(help="A recommendation id (rec-...).")], as_json: JsonFlag = False
) -> None:
    """A stored recommendation: its request, answer, provenance, cited passages and audit row."""
    from kbservice.recommend.answer import show

    shown = show(state.services, recommendation_id)
    if as_json:
        _print_json(shown)
        return
    out.print(
        f"audit row {shown['audit_seq']}, created {shown['created_at']}, "
        f"{'intact' if shown['intact'] else '[red]DOES NOT MATCH ITS AUDITED HASH[/red]'}"
    )
    out.print(f"request: {shown['request']}")
    _print_recommendation(shown["response"])


@audit_app.command("replay")
def audit_replay(
    recommendation_id: Annotated[str, typer.Argument(help="A recommendation id (rec-...).")],
    as_json: JsonFlag = False,
) -> None:
    """Re-run a recommendation from its provenance (knowledge version, adapter, calibration, prompt version);
    exit 1 if the output differs."""
    from kbservice.recommend.answer import replay

    result = replay(state.services, recommendation_id, actor=_author(None))
    if as_json:
        _print_json(result.to_json())
    elif result.identical:
        out.print(f"replay of {recommendation_id}: identical output")
    else:
        out.print(f"[red]replay of {recommendation_id} differs[/red]")
        for line in result.differences[:20]:
            out.print(f"  {line}")
    if not result.identical:
        raise typer.Exit(1)


@eval_app.command("diagnosis")
def eval_diagnosis(
    cases_file: Annotated[Path, typer.Option("--cases", help="Test cases (.jsonl/.csv in case format).")],
    train: Annotated[
        Path | None, typer.Option("--train", help="Training cases: build a fresh knowledge base from them (temporary).")
    ] = None,
    mode: ModeOption = "rag",
    as_json: JsonFlag = False,
) -> None:
    """Accuracy, macro-F1, per-class recall, ECE, abstention rate and latency of the top diagnosis. With --train
    the cases go into a fresh temporary store, calibrated on held-out training cases; else the current store."""
    from kbservice.ingest.cases import ingest_cases
    from kbservice.recommend.evaluate import evaluate_diagnosis

    mode = _check_mode(mode)
    if not cases_file.exists():
        raise KBError(f"{cases_file} does not exist")
    if train is None:
        result = evaluate_diagnosis(state.services, cases_file, mode=mode, calibrate_first=False, progress=_progress())  # type: ignore[arg-type]
    else:
        with _temporary_services() as (services, _):
            ingest_cases(
                train,
                **services.ingest_targets(),
                author="eval",
                progress=_progress(),
            )
            result = evaluate_diagnosis(services, cases_file, mode=mode, calibrate_first=True, progress=_progress())  # type: ignore[arg-type]
    if as_json:
        _print_json(result)
        return
    latency = result["latency_s"]
    out.print(
        f"{result['mode']}: {result['cases']} cases, {result['candidates']} candidates: accuracy "
        f"{result['accuracy']}, macro-F1 {result['macro_f1']}, ECE {result['ece']}, abstained "
        f"{result['abstention_rate']}, latency mean {latency['mean']}s p50 {latency['p50']}s p95 {latency['p95']}s"
    )
    for name, scores in result.get("ablation", {}).items():
        out.print(f"  {name:<36} accuracy {scores['accuracy']}  NLL {scores['nll']}  ECE {scores['ece']}")


@eval_app.command("split")
def eval_split(
    path: Annotated[
        Path, typer.Argument(help="A labelled CSV, e.g. ../shared/data/symptom2disease/symptom2disease.csv")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for train.jsonl and test.jsonl.")],
    label_column: Annotated[str, typer.Option(help="Column with the label.")] = "label",
    text_column: Annotated[str, typer.Option(help="Column with the findings text.")] = "text",
    id_column: Annotated[
        str | None, typer.Option(help="Column with unique case ids (default: number the rows).")
    ] = None,
    test_share: Annotated[float, typer.Option(min=0.05, max=0.95, help="Share of each label held out.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Shuffle seed.")] = 0,
) -> None:
    """Write a stratified train/test split of a labelled CSV as case files for `eval diagnosis`."""
    from kbservice.recommend.evaluate import split_labelled_csv

    result = split_labelled_csv(
        path,
        out_dir=out_dir,
        label_column=label_column,
        text_column=text_column,
        id_column=id_column,
        test_share=test_share,
        seed=seed,
    )
    out.print(
        f"train: {result['train']} cases -> {out_dir / 'train.jsonl'}; "
        f"test: {result['test']} cases -> {out_dir / 'test.jsonl'}"
    )


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
        _print_json(result)


@eval_app.command("treatment")
def eval_treatment(
    indications: Annotated[Path, typer.Option(help="PharmacotherapyDB indications.tsv.")] = Path(
        "../shared/data/pharmacotherapydb/indications.tsv"
    ),
    limit: Annotated[int | None, typer.Option(help="Only the first N diseases (alphabetical).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """How often the treatment plan names a disease-modifying drug, with PharmacotherapyDB indications
    ingested as the only knowledge (a fresh temporary store; the configured language model)."""
    from kbservice.recommend.treatment_eval import evaluate_treatment

    with _temporary_services() as (services, workdir):
        result = evaluate_treatment(services, indications, workdir=workdir, limit=limit, progress=_progress())
    if as_json:
        _print_json(result)
        return
    out.print(
        f"{result['diseases_with_dm_drugs']} diseases with disease-modifying drugs: plan names one in "
        f"{result['plans_naming_a_dm_drug']:.1%}, names a not-indicated drug in "
        f"{result['plans_naming_a_not_indicated_drug']:.1%}; {result['mean_plan_seconds']} s per plan"
    )
