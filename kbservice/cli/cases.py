"""Case commands: labelled cases in (de-identified on the way), and the stored cases listed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kbservice.cli.app import JsonFlag, app, author_or_user, check_version, ingest_app, out, print_json, progress, state


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
        author=author_or_user(author),
        progress=progress(),
    )
    if as_json:
        print_json(report.to_json())
        return
    out.print(f"version {report.version}: {len(report.added)} case(s) added in {report.seconds:.1f}s")


@app.command()
def cases(
    as_of: Annotated[
        int | None,
        typer.Option("--as-of", callback=check_version, help="Cases valid at this version (default: newest)."),
    ] = None,
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
        print_json([case.to_json() | {"image_ids": image_ids.get(case.case_id, [])} for case in rows])
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
