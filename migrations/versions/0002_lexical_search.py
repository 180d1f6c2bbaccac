"""Lexical search: FTS5 on SQLite, a generated tsvector with a GIN index on PostgreSQL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE chunks_fts USING fts5("
            "context, text, content='chunks', content_rowid='id', tokenize='porter unicode61')"
        )
        # Chunks are append-only (only version_removed changes), so an insert trigger keeps FTS in step.
        op.execute(
            "CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN "
            "INSERT INTO chunks_fts(rowid, context, text) VALUES (new.id, new.context, new.text); END"
        )
        op.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
    elif dialect == "postgresql":
        op.execute(
            "ALTER TABLE chunks ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS "
            "(setweight(to_tsvector('english', context), 'B') || to_tsvector('english', text)) STORED"
        )
        op.execute("CREATE INDEX ix_chunks_search_tsv ON chunks USING gin (search_tsv)")
    else:
        raise NotImplementedError(f"lexical search is implemented for sqlite and postgresql, not {dialect}")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER chunks_fts_insert")
        op.execute("DROP TABLE chunks_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX ix_chunks_search_tsv")
        op.execute("ALTER TABLE chunks DROP COLUMN search_tsv")
