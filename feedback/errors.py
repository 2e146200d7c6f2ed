"""Errors raised by the feedback store, and the database-error translator.

    common.errors.ServiceError
    ├── NotFound (404)
    │   ├── PredictionNotFound(prediction_id, sample_rate)
    │   ├── ReportNotFound(report_id)
    │   ├── ReviewItemNotFound(item_id)
    │   └── RetrainingRequestNotFound(request_id)
    ├── Unprocessable (422)
    │   ├── UnknownLabel(field, label, allowed)
    │   ├── BadTriageUpdate(message)
    │   ├── IdempotencyConflict(key)
    │   ├── BadCategory(name, max_chars)
    │   └── ReviewItemClosed(item_id, status)
    └── Unavailable (503, Retry-After)
        ├── DatabaseUnavailable(operation)
        └── PredictionLogUnavailable(why)

`translate_db_errors()` turns connection-level SQLAlchemy errors (server down,
pool exhausted, SQLite locked past its busy timeout) into `DatabaseUnavailable`,
so the HTTP layer answers 503 with Retry-After instead of a 500; `store_function`
does it for a function taking a session first, and rolls the session back.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from common.errors import NotFound, Unavailable, Unprocessable

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class PredictionNotFound(NotFound):
    code = "prediction_not_found"

    def __init__(self, prediction_id: str, *, sample_rate: float = 1.0):
        sampled = (
            f"; the log keeps a random {sample_rate:.0%} of answered rows "
            f"(prediction_log.sample_rate={sample_rate:g}), so it may not have "
            "been kept"
            if sample_rate < 1
            else ""
        )
        super().__init__(
            f"no logged prediction has id {prediction_id!r}; it may be unknown, "
            "expired by retention, or not logged (send the input and output instead)"
            + sampled,
            field="prediction_id",
        )


class PredictionLogUnavailable(Unavailable):
    code = "prediction_log_unavailable"

    def __init__(self, why: str, *, retry_after_s: int = 1):
        super().__init__(
            f"the prediction log cannot take this answer now ({why}); nothing was "
            "answered, retry later",
            retry_after_s=retry_after_s,
        )


class ReportNotFound(NotFound):
    code = "report_not_found"

    def __init__(self, report_id: str):
        super().__init__(f"no report has id {report_id!r}", field="report_id")


class UnknownLabel(Unprocessable):
    code = "unknown_label"

    def __init__(self, field: str, label: str, allowed: Sequence[str]):
        super().__init__(
            f"{field} {label!r} is not a label of this model; "
            f"allowed: {', '.join(allowed)}",
            field=field,
            allowed=list(allowed),
        )


class BadTriageUpdate(Unprocessable):
    code = "bad_triage_update"


class IdempotencyConflict(Unprocessable):
    code = "idempotency_conflict"

    def __init__(self, key: str):
        super().__init__(
            f"Idempotency-Key {key!r} was already used by this client for a "
            "different report body; retry with the same body, or use a new key "
            "for a new report",
            field="Idempotency-Key",
        )


class BadCategory(Unprocessable):
    code = "bad_category"

    def __init__(self, name: str, max_chars: int):
        super().__init__(
            f"category {name[:80]!r} is not allowed: give 1 to {max_chars} "
            "characters of text",
            field="category",
        )


class ReviewItemNotFound(NotFound):
    code = "review_item_not_found"

    def __init__(self, item_id: int):
        super().__init__(f"no review item has id {item_id}", field="item_id")


class ReviewItemClosed(Unprocessable):
    code = "review_item_closed"

    def __init__(self, item_id: int, status: str):
        super().__init__(
            f"review item {item_id} is already {status}; only pending items "
            "can be answered",
            field="item_id",
        )


class RetrainingRequestNotFound(NotFound):
    code = "retraining_request_not_found"

    def __init__(self, request_id: int):
        super().__init__(
            f"no retraining request has id {request_id}", field="request_id"
        )


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"

    def __init__(self, operation: str = "this request", *, retry_after_s: int = 5):
        super().__init__(
            f"the feedback database is unavailable for {operation}; "
            "nothing was stored, retry later",
            retry_after_s=retry_after_s,
        )


# Errors that mean "the database cannot be reached or is busy", as opposed to a
# bug in our SQL. OperationalError covers connection refused, server shutdown,
# and SQLite's "database is locked"; InterfaceError a closed connection;
# TimeoutError an exhausted connection pool.
_TRANSIENT = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


def is_transient(exc: BaseException) -> bool:
    """True for errors that a retry against a recovered database would fix."""
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


#: What SQLite says of a damaged file. Not transient, but the answer is the same:
#: nothing can be stored or read back, so 503, never an acknowledged write.
_SQLITE_DAMAGED = ("database disk image is malformed", "file is not a database")


def is_damaged_sqlite(exc: BaseException) -> bool:
    return isinstance(exc, sa_exc.DatabaseError) and any(
        marker in str(exc.orig) for marker in _SQLITE_DAMAGED
    )


@contextmanager
def translate_db_errors(operation: str = "this request") -> Iterator[None]:
    """Re-raise transient database errors, and a damaged SQLite file, as
    `DatabaseUnavailable` (503)."""
    try:
        yield
    except sa_exc.SQLAlchemyError as exc:
        if is_damaged_sqlite(exc):
            log.error("the SQLite database is damaged during %s: %s", operation, exc)
            raise DatabaseUnavailable(operation) from exc
        if not is_transient(exc):
            raise
        # The message can hold host names; it goes to the log, not the client.
        log.warning("database unavailable during %s: %s", operation, exc)
        raise DatabaseUnavailable(operation) from exc


def store_function(fn: Callable[P, T]) -> Callable[P, T]:
    """Roll back and translate transient database errors for one store function."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        session = args[0]
        assert isinstance(session, Session)
        try:
            with translate_db_errors(fn.__name__.replace("_", " ")):
                return fn(*args, **kwargs)
        except BaseException:
            # With the server gone the rollback can fail too; the original error
            # is the one to report.
            with contextlib.suppress(Exception):
                session.rollback()
            raise

    return wrapper
