"""Alembic migrations: they build the schema the models describe, on both backends,
and two workers migrating at once do not trip over each other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from feedback.db import (
    VERSION_TABLE,
    current_revision,
    head_revision,
    make_engine,
    migrate,
)
from feedback.models import Base

ROOT = Path(__file__).resolve().parents[2]
TABLES = {
    "model_versions",
    "reports",
    "regression_cases",
    "regression_runs",
    "regression_results",
    "retraining_requests",
    "served_state",
    "categories",
    "review_items",
    "leases",
    "job_state",
    "shadow_runs",
    "shadow_tallies",
    VERSION_TABLE,
}


def test_migrations_create_every_table_at_head(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        migrate(engine)
        assert set(inspect(engine).get_table_names()) == TABLES
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


def test_migrate_twice_is_a_no_op(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_workers_migrating_at_once_all_succeed(db_url: str, tmp_path: Path) -> None:
    # Separate processes, like service workers starting together, from a cwd
    # that is not the project root.
    code = "import sys; from feedback.db import migrate; migrate(sys.argv[1])"
    env = {"PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, db_url],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        assert set(inspect(engine).get_table_names()) == TABLES
    finally:
        engine.dispose()
