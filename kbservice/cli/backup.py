"""`backup` and `restore`: a consistent copy of the whole installation while it runs, and bringing it back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kbservice.backup import make_backup, restore_backup
from kbservice.cli.app import JsonFlag, app, out, print_json, progress, state
from kbservice.config import load_settings


@app.command()
def backup(
    target: Annotated[Path, typer.Argument(help="A new directory for the backup.")],
    as_json: JsonFlag = False,
) -> None:
    """Back up the installation while it runs: one consistent copy of the database (SQLite's online backup;
    pg_dump for PostgreSQL), the index snapshot, adapters, image encoders, de-identified image files and the
    installation's key files, with a manifest of checksums. The backup holds patient-derived data and keys:
    keep it as protected as the database."""
    services = state.services
    report = make_backup(settings=services.settings, engine=services.engine, target=target, progress=progress())
    if as_json:
        print_json(report.to_json())
        return
    out.print(
        f"backed up {report.database} database (migration {report.schema_revision}) and {report.files - 1} "
        f"files, {report.bytes / 1e6:.1f} MB, into {report.directory} in {report.seconds:.1f}s"
    )


@app.command()
def restore(
    source: Annotated[Path, typer.Argument(help="A directory written by `kbservice backup`.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="A new (or empty) data directory to restore into.")],
    database_url: Annotated[
        str | None,
        typer.Option(
            help="The database to restore into: an empty PostgreSQL database for a PostgreSQL backup "
            "(default: a new SQLite file in the data directory).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Restore a backup into a new data directory and database, after checking every file's checksum; the
    schema is then migrated to this version of kbservice. Afterwards run `index verify`, `audit verify` and
    `audit replay` against the new data directory."""
    settings = load_settings(data_dir=data_dir).model_copy(update={"database_url": database_url})
    report = restore_backup(source, settings=settings, progress=progress())
    if as_json:
        print_json(report.to_json())
        return
    out.print(
        f"restored {report.database} database (now at migration {report.schema_revision}) and {report.files} "
        f"files into {report.data_dir} in {report.seconds:.1f}s"
    )
