"""Leases in the SQL store: at most one process runs a named job at a time.

A lease is a row (`feedback.models.Lease`) naming its holder, when it expires and a
fencing token. Every change is one conditional statement, so the database decides
who wins a race on SQLite (BEGIN IMMEDIATE serialises writers) and on PostgreSQL
(the loser's UPDATE waits on the row lock, then re-checks its WHERE against the
winner's row and matches nothing):

    acquire   free or expired, or already mine -> mine until now + ttl
    renew     still mine and unexpired         -> mine until now + ttl
    release   mine                             -> expires now
    mark_done mine, with my token              -> records the window's work as done

The token grows by one each time the lease changes hands, so work tagged with a
stale token can be refused (`mark_done` is), even from a holder that was paused
past its expiry and does not know it lost the lease.

Time comes from the database on PostgreSQL (one clock for every replica, whatever
their hosts' clocks say); SQLite is one machine's file, so its clock is the host's.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from feedback.db import begin_write
from feedback.models import Lease as LeaseRow


@dataclass(frozen=True)
class Lease:
    """A lease as its holder saw it when it last acquired or renewed it."""

    name: str
    holder: str
    token: int
    expires_at: datetime
    done_until: datetime | None


def new_holder_id() -> str:
    """A holder id unique to this process: host, pid, and a nonce against pid reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def database_now(session: Session) -> datetime:
    """The time by the database's clock (PostgreSQL) or this host's (SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        value = session.execute(select(func.clock_timestamp())).scalar_one()
        assert isinstance(value, datetime)
        return value.astimezone(UTC)
    return datetime.now(UTC)


def acquire(session: Session, name: str, *, holder: str, ttl_s: float) -> Lease | None:
    """Take the lease if it is free, expired or already ours; commits. None: held
    by someone else."""
    begin_write(session)
    now = database_now(session)
    expires = now + timedelta(seconds=ttl_s)
    mine = LeaseRow.holder == holder
    taken = session.execute(
        update(LeaseRow)
        .where(LeaseRow.name == name, or_(mine, LeaseRow.expires_at <= now))
        .values(
            # The right-hand side sees the row before the update: the token and
            # acquisition time change only when the lease changes hands.
            token=case((mine, LeaseRow.token), else_=LeaseRow.token + 1),
            acquired_at=case((mine, LeaseRow.acquired_at), else_=now),
            holder=holder,
            expires_at=expires,
        )
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if not taken:
        taken = _insert_if_absent(
            session, name, holder=holder, now=now, expires=expires
        )
    lease = _read(session, name) if taken else None
    session.commit()
    return lease


def _insert_if_absent(
    session: Session, name: str, *, holder: str, now: datetime, expires: datetime
) -> int:
    values = {
        "name": name,
        "holder": holder,
        "token": 1,
        "acquired_at": now,
        "expires_at": expires,
    }
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    # RETURNING, not rowcount: psycopg reports -1 for a conflict that did nothing.
    stmt = (
        insert(LeaseRow)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(LeaseRow.name)
    )
    return len(session.execute(stmt).all())


def renew(session: Session, lease: Lease, *, ttl_s: float) -> Lease | None:
    """Extend our unexpired lease; commits. None: it expired or changed hands."""
    begin_write(session)
    now = database_now(session)
    renewed = session.execute(
        update(LeaseRow)
        .where(*_held(lease), LeaseRow.expires_at > now)
        .values(expires_at=now + timedelta(seconds=ttl_s))
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    current = _read(session, lease.name) if renewed else None
    session.commit()
    return current


def release(session: Session, lease: Lease) -> bool:
    """Give the lease up now (it stays ours until someone takes it); commits."""
    begin_write(session)
    now = database_now(session)
    released = session.execute(
        update(LeaseRow)
        .where(*_held(lease))
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    session.commit()
    return bool(released)


def mark_done(session: Session, lease: Lease, *, until: datetime) -> bool:
    """Record that the job's work is done up to `until`, if the lease is still ours
    with the same token; commits. False: someone else holds it now."""
    begin_write(session)
    now = database_now(session)
    marked = session.execute(
        update(LeaseRow)
        .where(*_held(lease), LeaseRow.expires_at > now)
        .values(done_until=until)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    session.commit()
    return bool(marked)


def read(session: Session, name: str) -> Lease | None:
    """The lease row as stored now (None if the job never ran)."""
    return _read(session, name)


def _held(lease: Lease) -> tuple[ColumnElement[bool], ...]:
    return (
        LeaseRow.name == lease.name,
        LeaseRow.holder == lease.holder,
        LeaseRow.token == lease.token,
    )


def _read(session: Session, name: str) -> Lease | None:
    row = session.execute(
        select(LeaseRow)
        .where(LeaseRow.name == name)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        return None
    return Lease(
        name=row.name,
        holder=row.holder,
        token=row.token,
        expires_at=row.expires_at,
        done_until=row.done_until,
    )
