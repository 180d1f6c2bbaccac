"""Alembic environment: kbservice's metadata, and the engine from kbservice settings (or the caller)."""

from __future__ import annotations

from alembic import context

from kbservice.config import load_settings
from kbservice.db.engine import make_engine
from kbservice.db.schema import metadata

target_metadata = metadata


def run_migrations_online() -> None:
    engine = context.config.attributes.get("engine")
    if engine is None:
        engine = make_engine(load_settings().resolved_database_url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("kbservice migrations run online only: use `kbservice init`")
run_migrations_online()
