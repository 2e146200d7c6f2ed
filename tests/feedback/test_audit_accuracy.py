"""Measured accuracy of the answered audit sample, with its Wilson interval."""

from __future__ import annotations

import math

import pytest
from sqlalchemy.orm import Session, sessionmaker

from feedback.audit_accuracy import audit_accuracy, wilson_interval
from feedback.models import ReviewItem, utcnow


def test_wilson_interval_by_hand() -> None:
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(b) for b in wilson_interval(0, 0))


def _item(i: int, reason: str, label: str | None, answer: str | None) -> ReviewItem:
    return ReviewItem(
        prediction_id=f"p{i}", logged_at=utcnow(), reason=reason,
        model_version="v1", outputs={}, label=label, answer=answer,
        status="answered" if answer else "pending",
    )  # fmt: skip


def test_only_answered_audit_items_of_answered_rows_count(
    sessions: sessionmaker[Session],
) -> None:
    items = [_item(i, "audit", "Adelie", "Adelie") for i in range(8)]
    items += [
        _item(8, "audit", "Adelie", "Gentoo"),
        _item(9, "audit", "Gentoo", "Adelie"),
    ]
    items += [
        _item(10, "audit", "Adelie", None),  # not answered yet
        _item(11, "low_margin", "Adelie", "Gentoo"),  # a biased sample
        _item(12, "abstained", None, "Gentoo"),
    ]
    with sessions() as session:
        session.add_all(items)
        session.commit()
        got = audit_accuracy(session)
        other = audit_accuracy(session, model_version="v2")
    assert (got.answered, got.correct) == (10, 8) and got.accuracy == 0.8
    assert (got.low, got.high) == pytest.approx(wilson_interval(8, 10))
    assert other.answered == 0 and math.isnan(other.accuracy)
