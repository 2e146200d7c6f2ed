"""Drop the SQL `predictions` table: the prediction log lives in columnar segments.

Rows in it are not moved: reports already hold copies of what they refer to, and
the drift window refills from new traffic. Downgrade recreates the empty table.

Revision ID: 0003_prediction_log
Revises: 0006_people_pages
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_prediction_log"
down_revision: str | None = "0008_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    # As 0001 made it: naive text on SQLite, timestamptz on PostgreSQL.
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.drop_index("ix_predictions_model_version_created_at", table_name="predictions")
    op.drop_index("ix_predictions_created_at", table_name="predictions")
    op.drop_table("predictions")


def downgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("policy_version", sa.String(200), nullable=True),
        sa.Column("context", sa.String(200), nullable=True),
        sa.Column("inputs", JSON, nullable=True),
        sa.Column("outputs", JSON, nullable=False),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("abstained", sa.Boolean(), nullable=False),
        sa.Column("trace", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_index(
        "ix_predictions_model_version_created_at",
        "predictions",
        ["model_version", "created_at"],
    )
