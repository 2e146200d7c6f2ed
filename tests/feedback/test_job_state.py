"""Job state in the shared store: the drift cursor and the retraining streak that
one replica's run leaves are where the next window's run, on any replica,
continues (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from feedback.job_state import SqlJsonState
from monitoring.drift import DriftResult
from monitoring.drift_metrics import NullDriftMetrics
from monitoring.retraining import RetrainPolicy, RetrainTrigger


def drifted_window() -> DriftResult:
    return DriftResult(
        skipped=False, reason=None, model_version="v1", window_rows=500,
        reference_rows=300, min_window_rows=100, alpha=0.05,
        computed_at=datetime.now(UTC), dataset_drift=True, drift_share=0.5,
    )  # fmt: skip


def test_a_streak_started_on_one_replica_is_continued_on_another(
    sessions: sessionmaker[Session],
) -> None:
    opened: list[str] = []

    def replica() -> RetrainTrigger:
        return RetrainTrigger(
            RetrainPolicy(consecutive_windows=2),
            open_request=lambda reason, _details: opened.append(reason),
            metrics=NullDriftMetrics(),
            state=SqlJsonState(sessions, "drift:default:retrain-trigger"),
        )

    first, second = replica(), replica()  # both started before any window
    first.observe(drifted_window())
    assert opened == []
    # The second replica runs the next window: its streak is the shared one.
    assert replica().streak == 1
    decision = second.observe(drifted_window())
    assert decision is not None and decision.details["consecutive_windows"] == 2
    assert opened == ["drift"]
    assert replica().streak == 0  # a request starts the streak over, for all


def test_states_are_kept_apart_by_name_and_replaced_whole(
    sessions: sessionmaker[Session],
) -> None:
    a = SqlJsonState(sessions, "drift:a:drift-cursor")
    b = SqlJsonState(sessions, "drift:b:drift-cursor")
    assert a.load() is None
    a.save({"judged_until": "2026-12-02T07:00:00+00:00"})
    a.save({"judged_until": "2026-12-02T07:05:00+00:00"})
    assert a.load() == {"judged_until": "2026-12-02T07:05:00+00:00"}
    assert b.load() is None
