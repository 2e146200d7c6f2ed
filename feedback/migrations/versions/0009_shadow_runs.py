"""Shadow runs: a candidate pack scored on sampled live traffic, tallied per worker.

Revision ID: 0009_shadow_runs
Revises: 0003_prediction_log
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_shadow_runs"
down_revision: str | None = "0003_prediction_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "shadow_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("deployment", sa.String(200), nullable=False),
        sa.Column("pack_tag", sa.String(200), nullable=False),
        sa.Column("pack_sha256", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("policy_version", sa.String(200), nullable=False),
        sa.Column("policy_yaml", sa.Text(), nullable=False),
        sa.Column("served_model_version", sa.String(200), nullable=False),
        sa.Column("sample_rate", sa.Float(), nullable=False),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("stopped_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_runs")),
    )
    op.create_index(
        "ix_shadow_runs_deployment_id", "shadow_runs", ["deployment", "id"]
    )
    op.create_table(
        "shadow_tallies",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("tallies", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["shadow_runs.id"],
            name=op.f("fk_shadow_tallies_run_id_shadow_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "worker", name=op.f("pk_shadow_tallies")),
    )


def downgrade() -> None:
    op.drop_table("shadow_tallies")
    op.drop_index("ix_shadow_runs_deployment_id", table_name="shadow_runs")
    op.drop_table("shadow_runs")
