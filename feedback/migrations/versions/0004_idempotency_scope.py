"""Idempotency keys scoped to their caller and bound to the body's hash.

The key was unique over all reports, so one client's key replayed another
client's report. Now (scope, key) is unique and the body hash is kept beside it.
Keys stored before this revision have no scope: no caller's lookup finds them
any more, so a retry of such an old report after the upgrade stores a new one.

Revision ID: 0004_idempotency_scope
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_idempotency_scope"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("idempotency_scope", sa.String(100), nullable=True))
        batch.add_column(
            sa.Column("idempotency_body_sha256", sa.String(64), nullable=True)
        )
        batch.drop_constraint("uq_reports_idempotency_key", type_="unique")
        batch.create_unique_constraint(
            "uq_reports_idempotency_scope_idempotency_key",
            ["idempotency_scope", "idempotency_key"],
        )


def downgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.drop_constraint(
            "uq_reports_idempotency_scope_idempotency_key", type_="unique"
        )
        batch.create_unique_constraint(
            "uq_reports_idempotency_key", ["idempotency_key"]
        )
        batch.drop_column("idempotency_body_sha256")
        batch.drop_column("idempotency_scope")
