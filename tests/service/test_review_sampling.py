"""Review sampling runs once per window across replicas, and the replica that runs
next picks up where the last run's window began, whichever replica ran it.

Two samplers (as two replicas: their own lease holders) on one real store
(SQLite and PostgreSQL) and one real prediction-log directory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from feedback.db import make_engine, migrate, session_factory
from feedback.log_reader import PredictionLogReader
from feedback.models import ReviewItem
from feedback.windowed_job import OncePerWindow, Outcome, Window
from service.review_sampling import (
    LOOKBACK_WINDOWS,
    REVIEW_JOB,
    ReviewSampling,
    sampling_since,
)
from service.settings import FeedbackSettings
from tests.feedback.helpers import log_predictions
from tests.feedback.test_people_store import CLOSE, answered


@pytest.fixture()
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


T = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)
S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("previous_end", "since"),
    [
        (None, T - LOOKBACK_WINDOWS * 30 * S),  # first run: a bounded look back
        (T, T - 30 * S),  # the last run was for the window before: from its start
        (T - 600 * S, T - LOOKBACK_WINDOWS * 30 * S),  # after an outage: bounded
    ],
)
def test_a_run_reads_from_the_start_of_the_last_completed_window(
    previous_end: datetime | None, since: datetime
) -> None:
    window = Window(start=T, end=T + 30 * S, previous_end=previous_end)
    assert sampling_since(window, 30.0) == since


INTERVAL_S = 1.0


def _sampler(
    sessions: sessionmaker[Session], reader: PredictionLogReader
) -> ReviewSampling:
    settings = FeedbackSettings(review_interval_s=INTERVAL_S, review_sample_share=1)
    window = OncePerWindow(
        sessions, REVIEW_JOB, interval_s=INTERVAL_S, ttl_s=30, poll_s=INTERVAL_S
    )
    return ReviewSampling(settings, sessions, reader, window)


def _early_in_a_window() -> None:
    """Sleep until the next window has just begun, so two polls share it."""
    time.sleep(INTERVAL_S - time.time() % INTERVAL_S + 0.05)


def _queued(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(ReviewItem)) or 0)


def test_review_sampling_runs_once_per_window_and_the_next_replica_continues(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    log_dir = tmp_path / "log"
    reader = log_predictions(log_dir, [answered(None, CLOSE) for _ in range(3)])
    a, b = _sampler(sessions, reader), _sampler(sessions, reader)

    _early_in_a_window()
    outcomes = [
        a.window.run_window_if_due(a.run, lambda: None),
        b.window.run_window_if_due(b.run, lambda: None),
    ]
    assert sorted(o.value for o in outcomes) == [Outcome.DONE.value, Outcome.RAN.value]
    assert a.added + b.added == 3
    ran, idle = (a, b) if outcomes[0] is Outcome.RAN else (b, a)

    # Rows logged after that run; the replica that ran is gone. The other one
    # runs the next window and queues them (and nothing twice).
    log_predictions(log_dir, [answered(None, CLOSE) for _ in range(2)])
    _early_in_a_window()
    assert idle.window.run_window_if_due(idle.run, lambda: None) is Outcome.RAN
    assert idle.added == 2 and _queued(sessions) == 5
    assert ran.window.run_window_if_due(ran.run, lambda: None) is Outcome.DONE
