"""Cases, calibrations and recommendations; documents get a kind (guideline or case).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="guideline"))
    op.create_table(
        "cases",
        sa.Column("case_id", sa.Integer, primary_key=True),
        sa.Column("document_id", sa.Integer, sa.ForeignKey("documents.id"), nullable=False, unique=True),
        sa.Column("external_id", sa.String(200), nullable=False),
        sa.Column("findings", sa.Text, nullable=False),
        sa.Column("history", sa.Text),
        sa.Column("age", sa.String(8)),
        sa.Column("sex", sa.String(1)),
        sa.Column("diagnoses", sa.JSON, nullable=False),
        sa.Column("treatment", sa.Text),
        sa.Column("images", sa.JSON, nullable=False),
        sa.Column("labeled_by", sa.String(200)),
        sa.Column("version_added", sa.Integer, sa.ForeignKey("knowledge_versions.version"), nullable=False),
    )
    op.create_index("ix_cases_external_id", "cases", ["external_id"])
    op.create_table(
        "calibrations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("base_model_sha256", sa.String(64), nullable=False),
        sa.Column("adapter_version", sa.String(40)),
        sa.Column("prompt_version", sa.String(40), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("knowledge_version", sa.Integer, nullable=False),
        sa.Column("weights", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("case_ids", sa.JSON, nullable=False),
    )
    op.create_index("ix_calibrations_lookup", "calibrations", ["base_model_sha256", "prompt_version", "mode"])
    op.create_table(
        "recommendations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("response_hash", sa.String(64), nullable=False),
        sa.Column("audit_seq", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("recommendations")
    op.drop_index("ix_calibrations_lookup", "calibrations")
    op.drop_table("calibrations")
    op.drop_index("ix_cases_external_id", "cases")
    op.drop_table("cases")
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("kind")
