"""Managed report categories, the review queue, notes on retraining requests.

Revision ID: 0006_people_pages
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_people_pages"
down_revision: str | None = "0005_served_state"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "categories",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_categories")),
        sa.UniqueConstraint("name", name=op.f("uq_categories_name")),
    )
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("prediction_id", sa.String(64), nullable=False),
        sa.Column("logged_at", UTC, nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("margin", sa.Float(), nullable=True),
        sa.Column("model_version", sa.String(200), nullable=True),
        sa.Column("policy_version", sa.String(200), nullable=True),
        sa.Column("context", sa.String(200), nullable=True),
        sa.Column("inputs", JSON, nullable=True),
        sa.Column("outputs", JSON, nullable=False),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("trace", JSON, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("answer", sa.String(200), nullable=True),
        sa.Column("reviewer", sa.String(200), nullable=True),
        sa.Column("answered_at", UTC, nullable=True),
        sa.Column("report_id", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.id"], name=op.f("fk_review_items_report_id_reports")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_items")),
        sa.UniqueConstraint("prediction_id", name=op.f("uq_review_items_prediction_id")),
    )
    op.create_index(
        "ix_review_items_status_created_at", "review_items", ["status", "created_at"]
    )
    with op.batch_alter_table("retraining_requests") as batch:
        batch.add_column(sa.Column("acknowledged_at", UTC, nullable=True))
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("retraining_requests") as batch:
        batch.drop_column("note")
        batch.drop_column("acknowledged_at")
    op.drop_table("review_items")
    op.drop_table("categories")
