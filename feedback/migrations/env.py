"""Alembic environment for the feedback store, driven only from `feedback.db.migrate`.

There is no alembic.ini: `migrate()` builds the config in code and hands over an
open connection inside a transaction it owns (with the cross-worker lock taken),
so everything here runs in that one transaction.
"""

from __future__ import annotations

from alembic import context

from feedback.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through feedback.db.migrate(), not the alembic CLI"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=config.get_main_option("version_table") or "alembic_version",
    # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
