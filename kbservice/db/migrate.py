"""Alembic glue: run migrations to head and check that a database is at the revision this code needs."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from kbservice.config import REPO_ROOT
from kbservice.errors import KBError, NotInitialisedError, SchemaOutdatedError

MIGRATIONS_DIR = REPO_ROOT / "migrations"


def alembic_config(engine: Engine) -> Config:
    if not (MIGRATIONS_DIR / "env.py").exists():
        raise KBError(f"migrations folder not found at {MIGRATIONS_DIR}; install kbservice from its source tree")
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def head_revision(engine: Engine) -> str:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Brings the schema to `revision` (default: head). Idempotent."""
    command.upgrade(alembic_config(engine), revision)


def require_current_schema(engine: Engine) -> None:
    """Raises a clear error unless the database is at the head revision."""
    current = current_revision(engine)
    if current is None:
        raise NotInitialisedError(
            f"database {engine.url.render_as_string(hide_password=True)} is not initialised; run `kbservice init`"
        )
    head = head_revision(engine)
    if current != head:
        raise SchemaOutdatedError(
            f"database is at migration {current} but this kbservice needs {head}; run `kbservice init` to migrate it"
        )


def migrations_path() -> Path:
    return MIGRATIONS_DIR
