"""Reading the served probabilities of the latest answered rows (SQLite and
PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from feedback.log_probabilities import read_answered_probabilities
from feedback.models import utcnow
from tests.feedback.helpers import LABELS, log_predictions, prediction


def test_latest_answered_rows_come_back_oldest_first_in_label_order(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    start = utcnow()
    rows = [
        prediction(label="Adelie", created_at=start + timedelta(seconds=i))
        for i in range(5)
    ]
    rows.append(prediction(label=None, created_at=start + timedelta(seconds=9)))
    rows.append(prediction(label="Gentoo", created_at=start + timedelta(seconds=10)))
    log_predictions(engine, rows)
    with sessions() as session:
        p, answers = read_answered_probabilities(
            session, limit_rows=3, labels=list(reversed(LABELS))
        )
    # The abstained row is left out; the 3 latest answered rows remain.
    assert answers.tolist() == [2, 2, 0]  # Adelie, Adelie, Gentoo (reversed order)
    np.testing.assert_allclose(p[0], [0.05, 0.05, 0.9])


def test_an_empty_log_gives_an_empty_window(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        p, answers = read_answered_probabilities(
            session, limit_rows=10, labels=LABELS, model_version="none"
        )
    assert p.shape == (0, 3) and answers.shape == (0,)
