"""Case classifier versions and their aliases; the classifier a calibration was fitted with.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "case_classifiers",
        sa.Column("version", sa.String(40), primary_key=True),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parent", sa.String(40)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("knowledge_version", sa.Integer, nullable=False),
        sa.Column("data_watermark", sa.Integer, nullable=False),
        sa.Column("embedder", sa.String(200), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("train_case_ids", sa.JSON, nullable=False),
        sa.Column("heldout_case_ids", sa.JSON, nullable=False),
        sa.Column("hyperparameters", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON),
        sa.Column("report", sa.JSON),
        sa.Column("artifact_sha256", sa.String(64)),
        sa.Column("artifact", sa.LargeBinary),
        sa.Column("triggered_by", sa.String(200), nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "case_classifier_aliases",
        sa.Column("alias", sa.String(20), primary_key=True),
        sa.Column("version", sa.String(40)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("calibrations") as batch:
        batch.add_column(sa.Column("classifier_version", sa.String(40)))


def downgrade() -> None:
    with op.batch_alter_table("calibrations") as batch:
        batch.drop_column("classifier_version")
    op.drop_table("case_classifier_aliases")
    op.drop_table("case_classifiers")
