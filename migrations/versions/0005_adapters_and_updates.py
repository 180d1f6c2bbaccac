"""Adapter registry, aliases, update runs, leases and the frozen evaluation set.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapters",
        sa.Column("version", sa.String(40), primary_key=True),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parent", sa.String(40)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("base_model", sa.String(200), nullable=False),
        sa.Column("base_model_sha256", sa.String(64), nullable=False),
        sa.Column("knowledge_version", sa.Integer, nullable=False),
        sa.Column("data_watermark", sa.Integer, nullable=False),
        sa.Column("train_case_ids", sa.JSON, nullable=False),
        sa.Column("heldout_case_ids", sa.JSON, nullable=False),
        sa.Column("replay_case_ids", sa.JSON, nullable=False),
        sa.Column("frozen_case_ids", sa.JSON, nullable=False),
        sa.Column("hyperparameters", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON),
        sa.Column("report", sa.JSON),
        sa.Column("artifact_sha256", sa.String(64)),
        sa.Column("artifact", sa.LargeBinary),
        sa.Column("triggered_by", sa.String(200), nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "adapter_aliases",
        sa.Column("alias", sa.String(20), primary_key=True),
        sa.Column("version", sa.String(40), sa.ForeignKey("adapters.version")),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "update_runs",
        sa.Column("run_id", sa.String(40), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("adapter_version", sa.String(40)),
        sa.Column("reason", sa.Text),
        sa.Column("knowledge_version", sa.Integer),
        sa.Column("triggered_by", sa.String(200), nullable=False),
        sa.Column("report", sa.JSON),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
    )
    op.create_table(
        "frozen_eval_cases",
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.case_id"), primary_key=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    for table in ("frozen_eval_cases", "leases", "update_runs", "adapter_aliases", "adapters"):
        op.drop_table(table)
