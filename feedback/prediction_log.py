"""Write-behind prediction log: a bounded queue drained by one thread in batches.

The request path only appends its `LogBatch` (the request's rows as columns) to an
in-memory deque (`submit_batch`: a lock and an `append`, never blocking, never
raising, nothing per row). A background thread takes queued batches up to
`batch_rows` rows, encodes them as one JSON array and inserts them with one
statement (`feedback.log_insert`), at least every `flush_interval_ms`.

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
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from feedback.db import LOG_WRITE
from feedback.errors import is_transient
from feedback.log_batch import LogBatch
from feedback.log_insert import insert_batches

log = logging.getLogger(__name__)

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
        self._queue: deque[LogBatch] = deque()
        self._rows = 0  # rows in the queue
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

    def submit_batch(self, batch: LogBatch) -> bool:
        """Queue a request's rows; rows that do not fit are dropped and counted
        (False). Costs the same for 1 row or 10,000."""
        try:
            dropped = self._enqueue(batch)
        except Exception:  # the hot path must never fail because of logging
            log.exception("prediction log: submit failed")
            return False
        if dropped:
            self._call(self._on_drop, dropped)
        return dropped == 0

    def _enqueue(self, batch: LogBatch) -> int:
        """Queue what fits of `batch`; returns the rows dropped (counted)."""
        n = len(batch)
        with self._cond:
            room = 0 if self._closing else self._max_queue_rows - self._rows
            accepted = n if n <= room else max(room, 0)
            if accepted:
                self._queue.append(batch if accepted == n else batch.head(accepted))
                self._rows += accepted
                self._accepted += accepted
                if self._rows >= self._batch_rows:
                    self._cond.notify()
            self._dropped += n - accepted
        return n - accepted

    @property
    def queue_depth(self) -> int:
        """Rows waiting to be written."""
        return self._rows

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
            left = self._rows
            self._queue.clear()
            self._rows = 0
            self._dropped += left
            self._finished += left
        if left:
            self._call(self._on_drop, left)
        return left == 0 and (thread is None or not thread.is_alive())

    # --- writer thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batches = self._next_batch()
            if batches is None:
                return
            if batches:
                self._write(batches)
                with self._cond:
                    self._finished += sum(map(len, batches))
                    self._cond.notify_all()

    def _next_batch(self) -> list[LogBatch] | None:
        """Wait for a full batch, the interval, a flush or close; None means stop.
        Takes whole queued batches until they hold at least `batch_rows` rows."""
        deadline = time.monotonic() + self._interval_s
        with self._cond:
            while (
                self._rows < self._batch_rows
                and not self._closing
                and not self._flush_waiters
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if not self._queue:
                return None if self._closing else []
            taken: list[LogBatch] = []
            rows = 0
            while self._queue and rows < self._batch_rows:
                batch = self._queue.popleft()
                taken.append(batch)
                rows += len(batch)
            self._rows -= rows
            return taken

    def _write(self, batches: list[LogBatch]) -> None:
        # One statement per shape (feature names, labels): normally just one.
        by_shape: dict[tuple[tuple[str, ...], tuple[str, ...]], list[LogBatch]] = {}
        for batch in batches:
            by_shape.setdefault(batch.shape_key, []).append(batch)
        dropped = 0
        for group in by_shape.values():
            dropped += self._insert_with_retry(group)
        if dropped:
            with self._cond:
                self._dropped += dropped
            self._call(self._on_drop, dropped)

    def _insert_with_retry(self, batches: list[LogBatch]) -> int:
        """Insert batches of one shape; returns how many rows were dropped."""
        deadline = time.monotonic() + self._max_retry_s
        delay_s = 0.05
        while True:
            try:
                self._insert(batches)
                return 0
            except Exception as exc:
                if not is_transient(exc):
                    return self._insert_one_by_one(batches, exc)
                if time.monotonic() + delay_s > min(deadline, self._close_deadline):
                    rows = sum(map(len, batches))
                    self._warn("database unavailable, dropped %d rows: %s", rows, exc)
                    return rows
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 1.0)

    def _insert_one_by_one(self, batches: list[LogBatch], first: Exception) -> int:
        # A bad row (duplicate id, value too long) fails the whole statement;
        # keep the good ones rather than losing the batch.
        self._warn("batch insert failed (%s); retrying row by row", first)
        dropped = 0
        for batch in batches:
            for row in batch.rows():
                try:
                    self._insert([row])
                except Exception:
                    dropped += 1
        return dropped

    def _insert(self, batches: list[LogBatch]) -> None:
        started = time.perf_counter()
        with self._engine.begin() as conn:
            rows = insert_batches(conn, batches)
        elapsed = time.perf_counter() - started
        with self._cond:
            self._written += rows
        self._call(self._on_flush, rows, elapsed)

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
