"""What each deployment serves (pack in the model store, policy), keyed by name.

Revision ID: 0005_served_state
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_served_state"
down_revision: str | None = "0004_idempotency_scope"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "served_state",
        sa.Column("deployment", sa.String(200), nullable=False),
        sa.Column("pack_tag", sa.String(200), nullable=False),
        sa.Column("pack_sha256", sa.String(64), nullable=False),
        sa.Column("policy_yaml", sa.Text(), nullable=False),
        sa.Column("policy_source", sa.String(1000), nullable=False),
        sa.Column("configured", sa.String(200), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("deployment", name=op.f("pk_served_state")),
    )


def downgrade() -> None:
    op.drop_table("served_state")
