"""Write-behind prediction log: a bounded queue drained by one thread in batches.

The request path only appends to an in-memory deque (`submit`: a lock and an
`extend`, never blocking, never raising). A background thread inserts batches of
up to `batch_rows` with one Core executemany per batch, at least every
`flush_interval_ms`.

When the queue is full, new rows are dropped and counted (`dropped_total`,
`on_drop`): serving answers matter more than log completeness. When the database
is down, a batch is retried for up to `max_retry_s`, then dropped and counted;
the next batch tries again, so logging recovers by itself once the database is
back. `close()` drains the queue on graceful shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Engine, Table, insert

from feedback.db import LOG_WRITE
from feedback.errors import is_transient
from feedback.models import Prediction, new_prediction_id, utcnow
from feedback.schemas import PredictionRecord

log = logging.getLogger(__name__)

_TABLE = cast(Table, Prediction.__table__)
_WARN_EVERY_S = 30.0


class PredictionLog:
    """Bounded write-behind queue of prediction rows with batched inserts."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_queue_rows: int,
        batch_rows: int,
        flush_interval_ms: int,
        on_drop: Callable[[int], None] | None = None,
        on_flush: Callable[[int, float], None] | None = None,
        max_retry_s: float = 5.0,
    ):
        if max_queue_rows < 1 or batch_rows < 1 or flush_interval_ms < 1:
            raise ValueError("queue size, batch size and flush interval must be >= 1")
        self._engine = engine.execution_options(**LOG_WRITE)
        self._max_queue_rows = max_queue_rows
        self._batch_rows = batch_rows
        self._interval_s = flush_interval_ms / 1000
        self._max_retry_s = max_retry_s
        self._on_drop = on_drop
        self._on_flush = on_flush
        self._queue: deque[PredictionRecord | Mapping[str, Any]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._accepted = 0  # rows ever queued
        self._finished = 0  # queued rows since written or dropped
        self._written = 0
        self._dropped = 0
        self._flush_waiters = 0
        self._closing = False
        self._close_deadline = float("inf")
        self._last_warning = 0.0
        self._thread: threading.Thread | None = None

    # --- request path -------------------------------------------------------------

    def submit(self, records: Sequence[PredictionRecord | Mapping[str, Any]]) -> bool:
        """Queue rows for writing; False (and counted as dropped) if they don't fit."""
        try:
            n = len(records)
            with self._cond:
                room = 0 if self._closing else self._max_queue_rows - len(self._queue)
                accepted = n if n <= room else max(room, 0)
                if accepted:
                    self._queue.extend(records[:accepted] if accepted < n else records)
                    self._accepted += accepted
                    if len(self._queue) >= self._batch_rows:
                        self._cond.notify()
                dropped = n - accepted
                self._dropped += dropped
        except Exception:  # the hot path must never fail because of logging
            log.exception("prediction log: submit failed")
            return False
        if dropped:
            self._call(self._on_drop, dropped)
        return dropped == 0

    def submit_lazily(
        self,
        rows: int,
        build: Callable[[int], Sequence[PredictionRecord | Mapping[str, Any]]],
    ) -> bool:
        """`submit` for records that cost something to build: `build(k)` must return
        the first k of the `rows` records, and is only asked for those that fit, so a
        full queue (an overloaded service) does not also pay for building rows it
        then drops. Rows that do not fit are counted as dropped, as in `submit`."""
        with self._cond:
            room = 0 if self._closing else self._max_queue_rows - len(self._queue)
        fits = max(0, min(rows, room))
        if fits < rows:
            with self._cond:
                self._dropped += rows - fits
            self._call(self._on_drop, rows - fits)
        if not fits:
            return False
        try:
            records = build(fits)
        except Exception:  # the hot path must never fail because of logging
            log.exception("prediction log: building records failed")
            return False
        return self.submit(records) and fits == rows

    @property
    def queue_depth(self) -> int:
        """Rows waiting to be written."""
        return len(self._queue)

    @property
    def dropped_total(self) -> int:
        """Rows dropped since start: queue full, database down, or unwritable."""
        return self._dropped

    @property
    def written_total(self) -> int:
        """Rows inserted since start."""
        return self._written

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> PredictionLog:
        """Start the writer thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="prediction-log", daemon=True
            )
            self._thread.start()
        return self

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every row queued before this call is written or dropped."""
        with self._cond:
            target = self._accepted
            if self._finished >= target:
                return True
            if self._thread is None or not self._thread.is_alive():
                return False
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._finished >= target, timeout_s)
            finally:
                self._flush_waiters -= 1

    def close(self, timeout_s: float = 10.0) -> bool:
        """Stop accepting rows, write what is queued, stop the thread.

        Returns True when everything queued was written or counted as dropped
        within `timeout_s`; rows still queued after that are counted as dropped.
        """
        with self._cond:
            self._closing = True
            self._close_deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
            self._dropped += left
            self._finished += left
        if left:
            self._call(self._on_drop, left)
        return left == 0 and (thread is None or not thread.is_alive())

    # --- writer thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._write(batch)
                with self._cond:
                    self._finished += len(batch)
                    self._cond.notify_all()

    def _next_batch(self) -> list[PredictionRecord | Mapping[str, Any]] | None:
        """Wait for a full batch, the interval, a flush or close; None means stop."""
        deadline = time.monotonic() + self._interval_s
        with self._cond:
            while (
                len(self._queue) < self._batch_rows
                and not self._closing
                and not self._flush_waiters
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if not self._queue:
                return None if self._closing else []
            take = min(self._batch_rows, len(self._queue))
            return [self._queue.popleft() for _ in range(take)]

    def _write(self, batch: list[PredictionRecord | Mapping[str, Any]]) -> None:
        rows = []
        for record in batch:
            try:
                rows.append(_row(record))
            except Exception as exc:
                self._warn("unloggable prediction record dropped: %s", exc)
        bad = len(batch) - len(rows)
        if rows:
            bad += self._insert_with_retry(rows)
        if bad:
            with self._cond:
                self._dropped += bad
            self._call(self._on_drop, bad)

    def _insert_with_retry(self, rows: list[dict[str, Any]]) -> int:
        """Insert rows; returns how many were dropped."""
        deadline = time.monotonic() + self._max_retry_s
        delay_s = 0.05
        while True:
            try:
                self._insert(rows)
                return 0
            except Exception as exc:
                if not is_transient(exc):
                    return self._insert_one_by_one(rows, exc)
                if time.monotonic() + delay_s > min(deadline, self._close_deadline):
                    self._warn(
                        "database unavailable, dropped %d rows: %s", len(rows), exc
                    )
                    return len(rows)
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 1.0)

    def _insert_one_by_one(self, rows: list[dict[str, Any]], first: Exception) -> int:
        # A bad row (duplicate id, value too long) fails the whole executemany;
        # keep the good ones rather than losing the batch.
        self._warn("batch insert failed (%s); retrying row by row", first)
        dropped = 0
        for row in rows:
            try:
                self._insert([row])
            except Exception:
                dropped += 1
        return dropped

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        started = time.perf_counter()
        with self._engine.begin() as conn:
            conn.execute(insert(_TABLE), rows)
        elapsed = time.perf_counter() - started
        with self._cond:
            self._written += len(rows)
        self._call(self._on_flush, len(rows), elapsed)

    def _warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning("prediction log: " + message, *args)

    @staticmethod
    def _call(callback: Callable[..., None] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("prediction log callback failed")


def _row(record: PredictionRecord | Mapping[str, Any]) -> dict[str, Any]:
    """A `predictions` row from a record or a dict with the same keys."""
    if isinstance(record, PredictionRecord):
        outputs = record.outputs.model_dump()
        return {
            "id": record.id,
            "created_at": record.created_at,
            "model_version": record.model_version,
            "policy_version": record.policy_version,
            "context": record.context,
            "inputs": record.inputs,
            "outputs": outputs,
            "label": outputs["label"],
            "abstained": bool(outputs["abstained"]),
            "trace": record.trace,
        }
    outputs = dict(record["outputs"])
    return {
        "id": record.get("id") or new_prediction_id(),
        "created_at": record.get("created_at") or utcnow(),
        "model_version": record["model_version"],
        "policy_version": record.get("policy_version"),
        "context": record.get("context"),
        "inputs": record.get("inputs"),
        "outputs": outputs,
        "label": outputs.get("label"),
        "abstained": bool(outputs.get("abstained", False)),
        "trace": record.get("trace"),
    }
