"""A person acting on a retraining request: acknowledge it, or close it, with a note.

open ──acknowledge──► acknowledged ──done / dismissed──► closed
  └──────────────done / dismissed─────────────────────────┘
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy.orm import Session

from common.errors import Unprocessable
from feedback.db import begin_write
from feedback.errors import RetrainingRequestNotFound, store_function
from feedback.models import RetrainingRequest, utcnow

Action = Literal["acknowledge", "done", "dismissed"]
ACTIONS: tuple[Action, ...] = ("acknowledge", "done", "dismissed")
MAX_NOTE_CHARS = 4000


@store_function
def act_on_request(
    session: Session, request_id: int, *, action: str, note: str | None = None
) -> RetrainingRequest:
    """Acknowledge or close a request (committed); a note is kept with it."""
    if action not in ACTIONS:
        raise Unprocessable(
            f"action {action[:40]!r} is not one of {', '.join(ACTIONS)}",
            field="action",
        )
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise Unprocessable(
            f"the note has {len(note)} characters; at most {MAX_NOTE_CHARS} allowed",
            field="note",
        )
    begin_write(session)
    row = session.get(RetrainingRequest, request_id, populate_existing=True)
    if row is None:
        raise RetrainingRequestNotFound(request_id)
    if row.status in ("done", "dismissed"):
        raise Unprocessable(
            f"retraining request {request_id} is already closed ({row.status})",
            field="request_id",
        )
    now = utcnow()
    if action == "acknowledge":
        row.status = "acknowledged"
        row.acknowledged_at = now
    else:
        row.status = action
        row.closed_at = now
    if note:
        row.note = note.strip()
    session.commit()
    return row
