"""Database engines, sessions and schema migrations for the feedback store.

SQLite (a file in the local data directory) is the embedded default; a
`postgresql://` URL selects PostgreSQL through psycopg 3. Both get the same
models and the same Alembic migrations (`feedback/migrations`), applied by
`migrate()` on start-up or from the CLI.

SQLite notes, because its defaults are wrong for a server:
- WAL lets readers run while the prediction log writes; `synchronous=FULL` makes
  a committed report survive a power cut, not just a process kill.
- pysqlite's own transaction handling does not wrap DDL and starts transactions
  lazily; we switch it off and emit BEGIN ourselves, so migrations are atomic and
  write transactions can take the write lock up front (`BEGIN IMMEDIATE`, see
  `WRITE`). A deferred transaction that reads and then writes fails at once with
  "database is locked" if another writer committed in between, whatever the
  busy timeout; an immediate one waits its turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: Alembic's version table, named so that other packages can keep their own.
VERSION_TABLE = "feedback_alembic_version"
#: Execution option: begin SQLite transactions with BEGIN IMMEDIATE.
WRITE = {"sqlite_immediate": True}
#: Execution options for the prediction log's inserts: in WAL mode
#: synchronous=NORMAL survives a process crash and skips the fsync per commit
#: (it can lose the last commits on power loss, acceptable for the log, not for
#: reports, which keep FULL).
LOG_WRITE = {"sqlite_immediate": True, "sqlite_synchronous": "NORMAL"}
# Arbitrary constant key for PostgreSQL's advisory lock around migrations.
_MIGRATE_LOCK_KEY = 0x66656564  # "feed"


def _json_dumps(value: Any) -> str:
    # orjson is several times faster than json for the prediction log's rows and
    # writes NaN as null instead of producing invalid JSON.
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def masked_url(url: str) -> str:
    """The URL as it may appear in a message or a log line: password as `***`."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparseable: any part of it could be the secret
        return "<unparseable database URL>"


def normalize_url(url: str) -> str:
    """Select psycopg 3 for PostgreSQL URLs that name no driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(
    url: str,
    *,
    busy_timeout_ms: int = 5000,
    connect_timeout_s: int = 5,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout_s: float = 5.0,
    echo: bool = False,
) -> Engine:
    """An engine for a SQLite or PostgreSQL URL, configured for this service."""
    url = normalize_url(url)
    backend = make_url(url).get_backend_name()
    common: dict[str, Any] = {
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
        "pool_pre_ping": True,
        "echo": echo,
    }
    if backend == "sqlite":
        database = make_url(url).database
        if not database or database == ":memory:":
            # One shared connection, or every checkout would see its own empty
            # database (tests only: nothing in memory survives a restart).
            pool: dict[str, Any] = {
                "poolclass": StaticPool,
                "connect_args": {"check_same_thread": False},
            }
        else:
            _ensure_sqlite_dir(url)
            pool = {
                "connect_args": {"timeout": busy_timeout_ms / 1000},
                "pool_size": pool_size,
                "max_overflow": max_overflow,
                "pool_timeout": pool_timeout_s,
            }
        engine = create_engine(url, **pool, **common)
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    if backend == "postgresql":
        return create_engine(
            url,
            connect_args={"connect_timeout": connect_timeout_s},
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout_s,
            **common,
        )
    raise ValueError(
        f"unsupported database URL {masked_url(url)!r}: use sqlite:/// or postgresql://"
    )


def _ensure_sqlite_dir(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see module doc)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        # synchronous is per connection and outlives the transaction: set it on
        # every begin where it differs, so pooled connections return to FULL.
        wanted = options.get("sqlite_synchronous", "FULL")
        info = conn.connection.info
        if info.get("synchronous", "FULL") != wanted:
            if wanted not in ("FULL", "NORMAL"):
                raise ValueError(f"unsupported sqlite_synchronous {wanted!r}")
            conn.exec_driver_sql(f"PRAGMA synchronous={wanted}")
            info["synchronous"] = wanted
        immediate = options.get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


SessionFactory = Callable[[], Session]
"""Makes a session to use as a context manager: `with sessions() as session:`."""


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for the store functions; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def begin_write(session: Session) -> None:
    """Start the session's transaction as a write transaction (SQLite: IMMEDIATE).

    Call before the first statement of a unit of work that will write. A
    read-only transaction already open is committed first; one with pending
    changes is kept. On PostgreSQL the write lock is a no-op.
    """
    if session.in_transaction() and not (
        session.new or session.dirty or session.deleted
    ):
        # A read transaction cannot be upgraded on SQLite once another writer has
        # committed (SQLITE_BUSY at once, no busy wait): end it and start afresh.
        session.commit()
    if not session.in_transaction():
        session.connection(execution_options=WRITE)


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    config.attributes["connection"] = connection
    return config


def migrate(
    engine_or_url: Engine | str, *, revision: str = "head", attempts: int = 5
) -> None:
    """Apply Alembic migrations up to `revision`; safe when workers race.

    PostgreSQL: one transaction holding an advisory lock, so a second worker waits
    and then finds the schema current. SQLite: one BEGIN IMMEDIATE transaction
    (DDL included), retried if the lock wait times out.
    """
    from alembic import command

    own = isinstance(engine_or_url, str)
    engine = (
        make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    )
    try:
        for attempt in range(1, attempts + 1):
            try:
                with engine.connect() as conn:
                    conn = conn.execution_options(**WRITE)
                    with conn.begin():
                        if conn.dialect.name == "postgresql":
                            conn.execute(
                                text("SELECT pg_advisory_xact_lock(:k)"),
                                {"k": _MIGRATE_LOCK_KEY},
                            )
                        command.upgrade(_alembic_config(conn), revision)
                return
            except OperationalError as exc:
                locked = "locked" in str(exc).lower()
                if not locked or attempt == attempts:
                    raise
                log.info("migration waiting for another worker (attempt %d)", attempt)
                time.sleep(0.2 * attempt)
    finally:
        if own:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped with this code."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
