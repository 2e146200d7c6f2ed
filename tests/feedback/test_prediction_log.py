"""The write-behind prediction log: batching, bounded queue with counted drops,
draining on close, surviving a database outage, and reading the drift window."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from feedback import log_window, store
from feedback.db import make_engine, migrate
from feedback.models import Prediction, utcnow
from feedback.prediction_log import PredictionLog
from tests.dbservers import TcpProxy
from tests.feedback.helpers import (
    ADELIE,
    FEATURES,
    LABELS,
    batch_of,
    log_predictions,
    prediction,
    submit_records,
)


def rows_in(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(Prediction)) or 0)


def test_rows_are_written_in_batches_of_at_most_batch_rows(engine: Engine) -> None:
    flushes: list[int] = []
    log = PredictionLog(
        engine,
        max_queue_rows=10_000,
        batch_rows=50,
        flush_interval_ms=5,
        on_flush=lambda n, seconds: flushes.append(n),
    ).start()
    for _ in range(23):
        assert submit_records(log, [prediction() for _ in range(10)])
    assert log.flush(timeout_s=30)
    assert log.close()
    assert sum(flushes) == 230 and max(flushes) <= 50
    assert rows_in(engine) == 230
    assert (log.written_total, log.dropped_total, log.queue_depth) == (230, 0, 0)


def test_full_queue_drops_and_counts_without_blocking(engine: Engine) -> None:
    drops: list[int] = []
    log = PredictionLog(
        engine,
        max_queue_rows=10,
        batch_rows=5,
        flush_interval_ms=5,
        on_drop=drops.append,
    )  # not started: nothing drains the queue
    assert log.submit_batch(batch_of(6))
    started = time.perf_counter()
    assert not log.submit_batch(batch_of(6))
    assert time.perf_counter() - started < 0.05
    assert (log.queue_depth, log.dropped_total, drops) == (10, 2, [2])
    log.start()
    assert log.close(timeout_s=30)
    assert rows_in(engine) == 10


def test_a_batch_that_does_not_fit_is_cut_and_the_rest_counted(
    engine: Engine,
) -> None:
    drops: list[int] = []
    log = PredictionLog(
        engine, max_queue_rows=10, batch_rows=5, flush_interval_ms=5,
        on_drop=drops.append,
    )  # fmt: skip
    assert log.submit_batch(batch_of(6))
    assert not log.submit_batch(batch_of(6))
    assert not log.submit_batch(batch_of(3))  # full
    assert (log.queue_depth, log.dropped_total, drops) == (10, 5, [2, 3])
    log.start()
    assert log.close(timeout_s=30)
    assert rows_in(engine) == 10


@pytest.mark.parametrize("store_inputs", [True, False])
def test_a_batch_reads_back_row_for_row(
    engine: Engine, session: Session, store_inputs: bool
) -> None:
    batch = batch_of(300, store_inputs=store_inputs, acted_rows=[0, 7])
    log = PredictionLog(
        engine, max_queue_rows=1000, batch_rows=128, flush_interval_ms=5
    ).start()
    assert log.submit_batch(batch)
    assert log.flush(timeout_s=30) and log.written_total == 300
    assert log.close(timeout_s=30)
    rows = {r.id: r for r in session.scalars(select(Prediction))}
    assert len(rows) == 300
    for i, pid in enumerate(batch.ids):
        row = rows[pid]
        assert (row.model_version, row.policy_version, row.context) == (
            "pack-v1", "policy-1", "Biscoe",
        )  # fmt: skip
        assert row.created_at == batch.created_at
        assert row.label == batch.labels[i] and row.abstained == (i == 0)
        assert row.outputs == {
            "label": batch.labels[i],
            "abstained": i == 0,
            "reason": batch.reasons[i],
            "probabilities": dict(zip(LABELS, [0.9, 0.06, 0.04], strict=True)),
        }
        if store_inputs:
            expected = batch.inputs[i].tolist()  # type: ignore[index,union-attr]
            assert set(row.inputs) == set(FEATURES)  # JSONB keeps no key order
            assert np.float32([row.inputs[f] for f in FEATURES]).tolist() == expected
        else:
            assert row.inputs is None
        assert row.trace == (batch.traces[i] if i in (0, 7) else None)  # type: ignore[index]


def test_close_drains_the_queue_and_later_rows_are_refused(engine: Engine) -> None:
    log = PredictionLog(
        engine, max_queue_rows=1000, batch_rows=1000, flush_interval_ms=60_000
    ).start()
    assert submit_records(log, [prediction() for _ in range(120)])
    time.sleep(0.05)
    assert rows_in(engine) == 0  # neither a full batch nor the interval yet
    assert log.close(timeout_s=30)
    assert rows_in(engine) == 120
    assert not submit_records(log, [prediction()])
    assert log.dropped_total == 1


def test_a_bad_row_is_dropped_and_the_rest_of_its_batch_kept(engine: Engine) -> None:
    first = prediction()
    log = PredictionLog(
        engine, max_queue_rows=100, batch_rows=100, flush_interval_ms=5
    ).start()
    submit_records(log, [first])
    assert log.flush(timeout_s=30)
    duplicate = prediction(id=first.id)
    # The duplicate id only fails in the database, which must not cost the rest
    # of its batch.
    assert submit_records(log, [prediction(), duplicate, prediction()])
    assert log.close(timeout_s=30)
    assert rows_in(engine) == 3
    assert log.dropped_total == 1


@contextmanager
def sqlite_locked(path: Path) -> Iterator[None]:
    """Another process's exclusive lock: writers see 'database is locked'."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_database_outage_drops_counted_rows_then_recovers(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        path = tmp_path / "log.db"
        engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=50)
        outage = sqlite_locked(path)
    else:
        proxy, url = request.getfixturevalue("postgres_proxy")
        engine = make_engine(url, connect_timeout_s=1)
        assert isinstance(proxy, TcpProxy)

        @contextmanager
        def cut() -> Iterator[None]:
            proxy.cut()
            try:
                yield
            finally:
                proxy.restore()

        outage = cut()
    migrate(engine)
    if backend == "postgres":
        with engine.begin() as conn:  # this session's database is shared per test
            conn.execute(delete(Prediction))
    log = PredictionLog(
        engine, max_queue_rows=30, batch_rows=10, flush_interval_ms=5, max_retry_s=0.3
    ).start()
    try:
        assert submit_records(log, [prediction() for _ in range(5)])
        assert log.flush(timeout_s=30)
        with outage:
            started = time.perf_counter()
            accepted = [submit_records(log, [prediction()]) for _ in range(150)]
            assert time.perf_counter() - started < 0.5  # the caller never waits
            assert not all(accepted)  # the queue filled up while the DB was away
            assert log.flush(timeout_s=30)
            assert log.dropped_total == 150
        assert submit_records(log, [prediction() for _ in range(7)])
        assert log.flush(timeout_s=30)
        assert rows_in(engine) == 5 + 7
    finally:
        log.close(timeout_s=5)
        engine.dispose()


# --- reading the window and retention ---------------------------------------------


def test_window_holds_the_latest_rows_oldest_first_one_column_per_feature(
    engine: Engine, session: Session
) -> None:
    now = utcnow()
    rows = [
        prediction(
            created_at=now - timedelta(seconds=100 - i),
            inputs={**ADELIE, "bill_length_mm": float(i)},
            label="Gentoo" if i % 2 else "Adelie",
        )
        for i in range(100)
    ]
    rows.append(prediction(created_at=now, store_inputs=False, label=None))
    rows.append(prediction(created_at=now, model_version="other"))
    log_predictions(engine, rows)

    window = log_window.read_prediction_window(
        session, limit_rows=11, model_version="pack-v1", feature_names=FEATURES
    )
    assert list(window.columns) == [*FEATURES, "predicted_label", "created_at"]
    assert len(window) == 11
    assert window["bill_length_mm"].tolist()[:10] == [float(i) for i in range(90, 100)]
    assert np.isnan(window["bill_length_mm"].iloc[-1])  # inputs not stored
    assert window["predicted_label"].iloc[-1] is None  # abstained
    assert window["created_at"].is_monotonic_increasing
    assert str(window["created_at"].dt.tz) == "UTC"
    everything = log_window.read_prediction_window(session, limit_rows=1000)
    assert len(everything) == 102 and set(FEATURES) <= set(everything.columns)


def test_purge_deletes_only_predictions_older_than_the_retention(
    engine: Engine, session: Session
) -> None:
    now = utcnow()
    old = [prediction(created_at=now - timedelta(days=31)) for _ in range(12)]
    recent = [prediction(created_at=now - timedelta(days=29)) for _ in range(3)]
    log_predictions(engine, old + recent)
    assert store.purge_predictions_older_than(session, 30, batch_rows=5) == 12
    assert rows_in(engine) == 3
    assert store.purge_predictions_older_than(session, 30) == 0


def test_sqlite_sustained_insert_rate(tmp_path: Path) -> None:
    """Measured, not just asserted: prints rows/s for the report (run with -s)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'rate.db'}")
    migrate(engine)
    n = 20_000
    records = [prediction() for _ in range(n)]
    log = PredictionLog(
        engine, max_queue_rows=n, batch_rows=1000, flush_interval_ms=50
    ).start()
    started = time.perf_counter()
    assert submit_records(log, records)
    assert log.flush(timeout_s=60)
    rate = n / (time.perf_counter() - started)
    log.close()
    engine.dispose()
    print(f"\nprediction log, SQLite: {rate:,.0f} rows/s sustained ({n} rows)")
    assert rate > 5_000
