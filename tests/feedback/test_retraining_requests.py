"""Acting on retraining requests: acknowledge, then close with a note; a closed
request stays closed; bad actions and unknown ids are clear 4xx errors."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from common.errors import Unprocessable
from feedback import store
from feedback.errors import RetrainingRequestNotFound
from feedback.retraining_requests import act_on_request


def test_acknowledge_then_close_keeps_the_note(session: Session) -> None:
    opened = store.open_retraining_request(
        session, reason="drift", details={"share": 0.75}
    )
    acked = act_on_request(session, opened.id, action="acknowledge", note=" on it ")
    assert (acked.status, acked.note, acked.closed_at) == (
        "acknowledged",
        "on it",
        None,
    )
    assert acked.acknowledged_at is not None
    done = act_on_request(session, opened.id, action="done", note="retrained v2")
    assert (done.status, done.note) == ("done", "retrained v2")
    assert done.closed_at is not None
    assert store.retraining_requests(session, status="open") == []
    with pytest.raises(Unprocessable, match="already closed"):
        act_on_request(session, opened.id, action="dismissed")


def test_unknown_action_or_request_is_refused(session: Session) -> None:
    opened = store.open_retraining_request(session, reason="drift", details={})
    with pytest.raises(Unprocessable, match="acknowledge, done, dismissed"):
        act_on_request(session, opened.id, action="delete")
    with pytest.raises(RetrainingRequestNotFound):
        act_on_request(session, opened.id + 1000, action="done")
    with pytest.raises(Unprocessable, match="at most 4000"):
        act_on_request(session, opened.id, action="done", note="x" * 4001)
