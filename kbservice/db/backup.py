"""Consistent copies of the database while the service runs, and bringing them back.

SQLite: the online backup API copies pages from one read transaction, so writers keep working and the copy is
one committed state. PostgreSQL: `pg_dump` (custom format) reads one repeatable-read snapshot; `pg_restore`
loads it into an empty database. Both client programs must be on PATH (Debian: postgresql-client)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import Engine, make_url

from kbservice.errors import KBError

SQLITE_FILE = "database.sqlite3"
POSTGRES_FILE = "database.pgdump"


def database_kind(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise KBError(f"backup supports SQLite and PostgreSQL databases, not {backend}")
    return backend


def _libpq_uri(url: str) -> str:
    """The URL as the PostgreSQL client programs take it (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _client(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise KBError(f"{program} is not on PATH; install the PostgreSQL client programs (postgresql-client)")
    return found


def _run(command: list[str], *, what: str) -> None:
    # The connection string may carry a password: the error names the program and its message, not argv.
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise KBError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")


def backup_database(engine: Engine, url: str, directory: Path) -> str:
    """Writes one consistent copy of the database into `directory`; returns the file's name."""
    if database_kind(url) == "sqlite":
        target = directory / SQLITE_FILE
        source = engine.raw_connection()
        try:
            destination = sqlite3.connect(target)
            try:
                source.driver_connection.backup(destination)  # type: ignore[union-attr]
            finally:
                destination.close()
        finally:
            source.close()
        return SQLITE_FILE
    target = directory / POSTGRES_FILE
    _run(
        [_client("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--file={target}", _libpq_uri(url)],
        what="pg_dump",
    )
    return POSTGRES_FILE


def restore_database(source: Path, url: str) -> None:
    """Loads the copy at `source` into the database at `url`, which must hold no kbservice tables yet."""
    kind = database_kind(url)
    expected = SQLITE_FILE if kind == "sqlite" else POSTGRES_FILE
    if source.name != expected:
        raise KBError(f"the backup holds a {_kind_of(source.name)} database; it cannot be restored into {kind}")
    if kind == "sqlite":
        target = Path(make_url(url).database or "")
        if target.exists() and target.stat().st_size > 0:
            raise KBError(f"{target} already exists; restore into a new database")
        target.parent.mkdir(parents=True, exist_ok=True)
        copy, restored = sqlite3.connect(source), sqlite3.connect(target)
        try:
            copy.backup(restored)
        finally:
            copy.close()
            restored.close()
        return
    _run(
        [
            _client("pg_restore"),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            f"--dbname={_libpq_uri(url)}",
            str(source),
        ],
        what="pg_restore",
    )


def _kind_of(name: str) -> str:
    return "SQLite" if name == SQLITE_FILE else "PostgreSQL"


def is_empty(engine: Engine) -> bool:
    """True when the database has no tables (a fresh target for a restore)."""
    from sqlalchemy import inspect

    return not inspect(engine).get_table_names()
