"""Knowledge base: versions, documents, chunks, index outbox, meta.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "knowledge_versions",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("parent", sa.Integer, sa.ForeignKey("knowledge_versions.version"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("documents", sa.Integer, nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("last_outbox_seq", sa.Integer, nullable=False),
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source_key", sa.String(1024), nullable=False),
        sa.Column("source", sa.String(300), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("publisher", sa.String(300)),
        sa.Column("effective_date", sa.String(40)),
        sa.Column("url", sa.Text),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("version_added", sa.Integer, sa.ForeignKey("knowledge_versions.version"), nullable=False),
        sa.Column("version_removed", sa.Integer, sa.ForeignKey("knowledge_versions.version")),
        sa.Column("removed_reason", sa.Text),
    )
    op.create_index("ix_documents_source_key", "documents", ["source_key"])
    op.create_index(
        "uq_documents_live_source_key",
        "documents",
        ["source_key"],
        unique=True,
        sqlite_where=sa.text("version_removed IS NULL"),
        postgresql_where=sa.text("version_removed IS NULL"),
    )
    op.create_table(
        "chunks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("document_id", sa.Integer, sa.ForeignKey("documents.id"), nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("heading_path", sa.JSON, nullable=False),
        sa.Column("context", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("char_start", sa.Integer, nullable=False),
        sa.Column("char_end", sa.Integer, nullable=False),
        sa.Column("token_count", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("version_added", sa.Integer, sa.ForeignKey("knowledge_versions.version"), nullable=False),
        sa.Column("version_removed", sa.Integer, sa.ForeignKey("knowledge_versions.version")),
    )
    op.create_index("ix_chunks_document_id", "chunks", ["document_id"])
    op.create_index("ix_chunks_version_added", "chunks", ["version_added"])
    op.create_index("ix_chunks_version_removed", "chunks", ["version_removed"])
    op.create_table(
        "index_outbox",
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("chunk_id", sa.Integer, sa.ForeignKey("chunks.id"), nullable=False, unique=True),
        sa.Column("version", sa.Integer, sa.ForeignKey("knowledge_versions.version"), nullable=False),
    )
    op.create_table(
        "kb_meta",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("kb_meta", "index_outbox", "chunks", "documents", "knowledge_versions"):
        op.drop_table(table)
