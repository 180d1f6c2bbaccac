"""Images of cases, image encoder versions and their aliases; the adapter's encoder version.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.case_id"), nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("modality", sa.String(16)),
        sa.Column("source_shape", sa.JSON, nullable=False),
        sa.Column("stored_path", sa.String(300), nullable=False),
        sa.Column("pixel_size", sa.Integer, nullable=False),
        sa.Column("pixels", sa.LargeBinary, nullable=False),
        sa.Column("header", sa.JSON, nullable=False),
        sa.Column("deidentified", sa.Boolean, nullable=False),
        sa.Column("deid_method", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_images_case_id", "images", ["case_id"])
    op.create_table(
        "image_encoders",
        sa.Column("version", sa.String(40), primary_key=True),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("parent", sa.String(40)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("knowledge_version", sa.Integer, nullable=False),
        sa.Column("data_watermark", sa.Integer, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("train_case_ids", sa.JSON, nullable=False),
        sa.Column("heldout_case_ids", sa.JSON, nullable=False),
        sa.Column("hyperparameters", sa.JSON, nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("pixel_size", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON),
        sa.Column("report", sa.JSON),
        sa.Column("artifact_sha256", sa.String(64)),
        sa.Column("artifact", sa.LargeBinary),
        sa.Column("triggered_by", sa.String(200), nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "image_encoder_aliases",
        sa.Column("alias", sa.String(20), primary_key=True),
        sa.Column("version", sa.String(40)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("adapters") as batch:
        batch.add_column(sa.Column("encoder_version", sa.String(40)))


def downgrade() -> None:
    with op.batch_alter_table("adapters") as batch:
        batch.drop_column("encoder_version")
    op.drop_table("image_encoder_aliases")
    op.drop_table("image_encoders")
    op.drop_index("ix_images_case_id", "images")
    op.drop_table("images")
