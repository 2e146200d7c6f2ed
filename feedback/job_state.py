"""The JSON state of once-per-window jobs in the shared store.

The drift run and its retraining trigger run once per window on whichever
replica holds the job's lease; their state (where the last judged window ended,
the streak of drifted windows, when each reason last opened a request) is one
row per name here, so the next window's run continues from it on any replica.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from feedback.db import begin_write
from feedback.errors import store_function
from feedback.models import JobStateRow, utcnow


class SqlJsonState:
    """`common.json_state.JsonState` kept in the `job_state` table under `name`."""

    def __init__(self, sessions: sessionmaker[Session], name: str):
        self._sessions = sessions
        self.name = name

    def load(self) -> dict[str, Any] | None:
        with self._sessions() as session:
            return read_job_state(session, self.name)

    def save(self, state: dict[str, Any]) -> None:
        with self._sessions() as session:
            write_job_state(session, self.name, state)


@store_function
def read_job_state(session: Session, name: str) -> dict[str, Any] | None:
    row = session.get(JobStateRow, name)
    return dict(row.state) if row is not None and isinstance(row.state, dict) else None


@store_function
def write_job_state(session: Session, name: str, state: dict[str, Any]) -> None:
    """Insert or replace the state of `name` (committed)."""
    begin_write(session)
    row = session.get(JobStateRow, name, populate_existing=True)
    if row is None:
        session.add(JobStateRow(name=name, state=state, updated_at=utcnow()))
    else:
        row.state = state
        row.updated_at = utcnow()
    session.commit()
