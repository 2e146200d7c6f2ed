"""Is the feedback store there and usable? Checked before anything relies on it.

    check_store(url, migrate=...)   start-up preflight: connect, migrate (or check
                                    the revision), SQLite's quick_check
    open_migrated(url)              an engine on a store that already exists at
                                    the code's revision (for offline commands)

Both raise `StoreNotReady` with one message for a person (the URL shown with its
password masked), so that a command or a server can stop with it instead of
creating an empty database or restarting forever.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from feedback.db import current_revision, head_revision, make_engine, masked_url
from feedback.db import migrate as run_migrations


class StoreNotReady(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _reason(exc: BaseException) -> str:
    """The driver's first line (no SQL, no parameters)."""
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def _quick_check(engine: Engine, shown: str) -> None:
    try:
        with engine.connect() as conn:
            rows = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check")]
    except sa_exc.DatabaseError as exc:
        raise StoreNotReady(
            f"database {shown} is not a readable SQLite file: {_reason(exc)}"
        ) from None
    if rows != ["ok"]:
        raise StoreNotReady(
            f"database {shown} is corrupt (SQLite quick_check: {rows[0]}); restore "
            "it from a backup or move it away"
        )


def _check_revision(engine: Engine, shown: str) -> None:
    revision, head = current_revision(engine), head_revision()
    if revision != head:
        raise StoreNotReady(
            f"database {shown} is at schema revision {revision or 'none (empty)'}, "
            f"this code needs {head}: run python -m feedback.cli migrate --db URL"
        )


def check_store(url: str, *, migrate: bool, connect_timeout_s: int = 5) -> None:
    """Raise `StoreNotReady` unless the store answers, is intact and is (or, with
    `migrate`, has been brought) at the code's schema revision."""
    shown = masked_url(url)
    try:
        engine = make_engine(url, connect_timeout_s=connect_timeout_s)
    except (ValueError, sa_exc.ArgumentError) as exc:
        raise StoreNotReady(str(exc)) from None
    try:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except sa_exc.DBAPIError as exc:
            unreadable = engine.dialect.name == "sqlite" and not isinstance(
                exc, sa_exc.OperationalError
            )
            problem = (
                "is not a readable SQLite file" if unreadable else "is unreachable"
            )
            raise StoreNotReady(f"database {shown} {problem}: {_reason(exc)}") from None
        if engine.dialect.name == "sqlite":
            _quick_check(engine, shown)
        try:
            if migrate:
                run_migrations(engine)
            else:
                _check_revision(engine, shown)
        except sa_exc.DBAPIError as exc:
            raise StoreNotReady(
                f"cannot migrate database {shown}: {_reason(exc)}"
            ) from None
    finally:
        engine.dispose()


def open_migrated(url: str) -> Engine:
    """An engine on an existing store at the code's revision; never creates one."""
    shown = masked_url(url)
    path = _sqlite_file(url)
    if path is not None and not path.is_file():
        raise StoreNotReady(
            f"no database at {path}: create it with "
            "python -m feedback.cli migrate --db URL (or give the service's)"
        )
    try:
        engine = make_engine(url)
    except (ValueError, sa_exc.ArgumentError) as exc:
        raise StoreNotReady(str(exc)) from None
    try:
        _check_revision(engine, shown)
    except sa_exc.DBAPIError as exc:
        engine.dispose()
        raise StoreNotReady(f"cannot reach database {shown}: {_reason(exc)}") from None
    except BaseException:
        engine.dispose()
        raise
    return engine
