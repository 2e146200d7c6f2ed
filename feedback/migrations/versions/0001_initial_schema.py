"""Initial schema: model versions, prediction log, reports, regression cases and runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as they were at this revision, so later model
# changes cannot silently rewrite history.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("promoted_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_model_versions_name_version")),
    )
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
    op.create_table(
        "reports",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("prediction_id", sa.String(64), nullable=True),
        sa.Column("model_version", sa.String(200), nullable=True),
        sa.Column("policy_version", sa.String(200), nullable=True),
        sa.Column("context", sa.String(200), nullable=True),
        sa.Column("inputs", JSON, nullable=True),
        sa.Column("bad_output", JSON, nullable=False),
        sa.Column("bad_label", sa.String(200), nullable=True),
        sa.Column("expected_label", sa.String(200), nullable=True),
        sa.Column("corrected_label", sa.String(200), nullable=True),
        sa.Column("categories", JSON, nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("reporter", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_reports_idempotency_key")),
    )
    op.create_index("ix_reports_created_at", "reports", ["created_at"])
    op.create_index("ix_reports_model_version", "reports", ["model_version"])
    op.create_index("ix_reports_prediction_id", "reports", ["prediction_id"])
    op.create_index("ix_reports_status_created_at", "reports", ["status", "created_at"])
    op.create_table(
        "regression_cases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("report_id", sa.String(32), nullable=False),
        sa.Column("inputs", JSON, nullable=False),
        sa.Column("expected_label", sa.String(200), nullable=False),
        sa.Column("context", sa.String(200), nullable=True),
        sa.Column("categories", JSON, nullable=False),
        sa.Column("model_version", sa.String(200), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.id"],
            name=op.f("fk_regression_cases_report_id_reports"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regression_cases")),
        sa.UniqueConstraint("report_id", name=op.f("uq_regression_cases_report_id")),
    )
    op.create_index("ix_regression_cases_active", "regression_cases", ["active"])
    op.create_table(
        "regression_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("candidate_version", sa.String(200), nullable=False),
        sa.Column("baseline_version", sa.String(200), nullable=False),
        sa.Column("policy_version", sa.String(200), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("summary", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regression_runs")),
    )
    op.create_index("ix_regression_runs_created_at", "regression_runs", ["created_at"])
    op.create_table(
        "regression_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("expected_label", sa.String(200), nullable=False),
        sa.Column("baseline_label", sa.String(200), nullable=True),
        sa.Column("candidate_label", sa.String(200), nullable=True),
        sa.Column("baseline_ok", sa.Boolean(), nullable=False),
        sa.Column("candidate_ok", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["regression_cases.id"],
            name=op.f("fk_regression_results_case_id_regression_cases"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["regression_runs.id"],
            name=op.f("fk_regression_results_run_id_regression_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regression_results")),
    )
    op.create_index("ix_regression_results_run_id", "regression_results", ["run_id"])


def downgrade() -> None:
    for table in (
        "regression_results",
        "regression_runs",
        "regression_cases",
        "reports",
        "predictions",
        "model_versions",
    ):
        op.drop_table(table)
