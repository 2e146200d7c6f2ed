"""The prediction log's writer: every answered batch appended to this worker's
write-ahead segment before the answer leaves.

`submit_batch` turns a request's rows into one record (a small request: one
orjson document; a large one: an Arrow IPC message; see `feedback.log_wal`) and
hands it to the operating system with one system call on the request path, so an
answer never exists without its rows in the page cache: a SIGKILL of the server
loses nothing that was answered. A machine crash can lose what was not yet
fsynced: at most `fsync_interval_s` seconds of rows (0 fsyncs every batch before
answering).

There is no queue to overflow. When an append cannot be made (a full disk, a
failing volume) or cannot start within the bound the policy sets
(`on_slow_storage`: `wait` up to `max_wait_s`, or `shed` at once), it raises
`PredictionLogUnavailable`: the request is answered 503 with Retry-After rather
than answered unlogged.

Segments rotate by size and age; a background thread closes idle ones and fsyncs
on its cadence. Closed segments are compacted into Parquet (also those of
writers that died: a writer holds an advisory lock on its open segment, so a
segment whose lock can be taken has no living writer, and a compactor holds the
same lock while it works) at the lowest CPU priority (`compaction_nice`), by a
second thread or, with `compaction_process`, by a process of its own
(`feedback.log_compactor`), which does not share the worker's interpreter lock.
Compaction costs more than the append, and it can wait for idle CPU, where
answering cannot. Under sustained saturation it lags and catches up when load
drops; readers find the rows in the write-ahead segments meanwhile. File names
are described in `feedback.log_segments`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from feedback.errors import PredictionLogUnavailable
from feedback.log_batch import LogBatch
from feedback.log_compactor import (
    CompactorProcess,
    compact_free_segments,
    compact_if_free,
)
from feedback.log_segments import (
    column_record,
    new_writer_id,
    row_record,
    schema_for,
    to_record_batch,
    wal_name,
)
from feedback.log_wal import ARROW, COLUMNS, END, MAGIC, ROWS, SCHEMA, frame

log = logging.getLogger(__name__)

_WARN_EVERY_S = 30.0
#: Requests of at most this many rows are appended as a rows record (an orjson
#: document), larger ones as a columns record (raw buffers). Measured CPU to
#: build one: 8 rows 4 µs as rows against 7 µs as columns, 64 rows 20 against
#: 7, 1,000 rows 358 against 12 (an Arrow record batch: 55, 64 and 134 µs).
#: Readers pay about 5 µs per row to convert rows records and about 140 µs per
#: columns record: the two cost the same at about 30 rows.
ROW_RECORD_MAX_ROWS = 32


@dataclass(frozen=True)
class WriterOptions:
    """How a writer rotates, syncs and behaves when storage is slow (the fields of
    `service.settings.PredictionLogSettings` that the writer uses)."""

    fsync_interval_s: float = 1.0
    rotate_bytes: int = 64 * 1024 * 1024
    rotate_age_s: float = 60.0
    on_slow_storage: Literal["wait", "shed"] = "wait"
    max_wait_s: float = 1.0
    sample_rate: float = 1.0
    compact: bool = True
    row_group_rows: int = 2048
    orphan_check_s: float = 30.0
    compaction_nice: int = 19
    compaction_process: bool = False
    """Compact in a process of its own (`feedback.log_compactor`) instead of a
    thread of the writer's."""


class _Segment:
    """One open write-ahead segment: a file of records, and its lock."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.schema = schema
        self.fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644
        )
        # Held while the segment is open: whoever can take it knows the writer
        # is gone (see `_compact_orphans`).
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.opened = time.monotonic()
        self.size = 0
        self.rows = 0
        self.synced = True
        # The magic and the schema record, then one record per request, then an
        # end record: each is written whole by one call.
        payload = schema.serialize()
        self._write(MAGIC + frame(SCHEMA, payload), payload)

    def append(self, kind: bytes, payload: bytes | pa.Buffer, rows: int) -> None:
        """Write one record: a rows record or a serialized record batch."""
        self._write(frame(kind, payload), payload)
        self.rows += rows
        self.synced = False

    def _write(self, header: bytes, payload: bytes | pa.Buffer) -> None:
        # One writev: the header and the payload reach the file together, and a
        # large Arrow message is not copied to be joined to its header.
        total = len(header) + len(payload)
        written = os.writev(self.fd, [header, payload])
        if written < total:  # a short write (a signal, a nearly full disk)
            rest = memoryview(header + memoryview(payload).tobytes())[written:]
            while rest:
                rest = rest[os.write(self.fd, rest) :]
        self.size += total

    def close(self) -> None:
        """Write the end record, sync and release the file (and its lock)."""
        try:
            self._write(frame(END, b""), b"")
            os.fsync(self.fd)
        finally:
            os.close(self.fd)


class PredictionLog:
    """Appends answered rows to this worker's segments under `log_dir`."""

    def __init__(
        self,
        log_dir: Path,
        options: WriterOptions | None = None,
        *,
        on_written: Callable[[int], None] | None = None,
        on_refused: Callable[[int], None] | None = None,
        writer_id: str | None = None,
    ):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.options = options or WriterOptions()
        if not 0 < self.options.sample_rate <= 1:
            raise ValueError("sample_rate must be in (0, 1]")
        self.writer_id = writer_id or new_writer_id()
        # Counts reach the callbacks from the background thread, once per tick:
        # nothing but the append itself runs on the request path.
        self._on_written = on_written
        self._on_refused = on_refused
        self._reported = (0, 0)
        self._lock = threading.Lock()
        self._segment: _Segment | None = None
        self._sequence = 0
        self._closed: list[Path] = []  # closed segments waiting for compaction
        self._wake = threading.Condition(threading.Lock())
        self._compactor: threading.Thread | None = None
        self._compactor_process: CompactorProcess | None = None
        self._stopping = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._rng = np.random.default_rng()
        self._written = 0
        self._refused = 0
        self._sampled_out = 0
        self._last_warning = 0.0

    # --- request path -------------------------------------------------------------

    def submit_batch(self, batch: LogBatch) -> bool:
        """Append a request's rows (sampled when `sample_rate` < 1) and return
        once the OS has them (fsynced too when `fsync_interval_s` is 0).

        Raises `PredictionLogUnavailable` when they cannot be appended in time:
        the caller must not answer the request."""
        n = len(batch)
        if n == 0:
            return True
        # The record is built outside the lock: only the write is serialised.
        schema = schema_for(batch)
        kind, rows = ROWS, n
        payload: bytes | pa.Buffer
        if self.options.sample_rate < 1:
            keep = self._rng.random(n) < self.options.sample_rate
            self._sampled_out += int((~keep).sum())
            if not keep.any():
                return True
            record = to_record_batch(batch, schema).filter(pa.array(keep))
            kind, rows, payload = ARROW, record.num_rows, record.serialize()
        elif n <= ROW_RECORD_MAX_ROWS:
            payload = row_record(batch)
        elif (columns := column_record(batch)) is not None:
            kind, payload = COLUMNS, columns
        else:
            kind, payload = ARROW, to_record_batch(batch, schema).serialize()
        if not self._acquire():
            self._refuse(n, "storage is busy with an earlier append")
        try:
            self._append_locked(batch, schema, kind, payload, rows)
        finally:
            self._lock.release()
        return True

    def _acquire(self) -> bool:
        if self.options.on_slow_storage == "shed":
            return self._lock.acquire(blocking=False)
        return self._lock.acquire(timeout=self.options.max_wait_s)

    def _append_locked(
        self,
        batch: LogBatch,
        schema: pa.Schema,
        kind: bytes,
        payload: bytes | pa.Buffer,
        rows: int,
    ) -> None:
        if self._closing:
            self._refuse(len(batch), "the log is closing")
        deadline = time.monotonic() + self.options.max_wait_s
        while True:
            try:
                segment = self._segment_for(schema, batch)
                segment.append(kind, payload, rows)
                if self.options.fsync_interval_s == 0:
                    os.fsync(segment.fd)
                    segment.synced = True
                break
            except OSError as exc:
                # A failed write may have left part of a record: that segment
                # ends here, the next attempt starts a new one.
                self._abandon_segment()
                self._warn("append failed: %s", exc)
                if (
                    self.options.on_slow_storage == "shed"
                    or time.monotonic() > deadline
                ):
                    self._refuse(len(batch), f"appending failed ({exc.strerror})")
                time.sleep(0.05)
        self._written += rows

    def _segment_for(self, schema: pa.Schema, batch: LogBatch) -> _Segment:
        segment = self._segment
        if segment is not None and (
            segment.schema is not schema  # schemas are cached: one object each
            or segment.size >= self.options.rotate_bytes
            or time.monotonic() - segment.opened >= self.options.rotate_age_s
        ):
            self._rotate_locked()
            segment = None
        if segment is None:
            start_ms = int(batch.created_at.timestamp() * 1000)
            first_id = batch.ids[0]
            if len(first_id) == 32:
                start_ms = min(start_ms, int(first_id[:12], 16))
            # A sequence number: two segments of one writer may start in one ms.
            self._sequence += 1
            path = self.log_dir / wal_name(
                start_ms, f"{self.writer_id}.{self._sequence}"
            )
            segment = self._segment = _Segment(path, schema)
        return segment

    def _refuse(self, rows: int, why: str) -> None:
        self._refused += rows
        raise PredictionLogUnavailable(why)

    # --- counters -----------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Rows taken but not at the OS: always 0 (appends are synchronous)."""
        return 0

    @property
    def written_total(self) -> int:
        """Rows appended since start."""
        return self._written

    @property
    def refused_total(self) -> int:
        """Rows of requests refused (503) because they could not be appended."""
        return self._refused

    @property
    def sampled_out_total(self) -> int:
        """Rows answered but not logged because of `sample_rate`."""
        return self._sampled_out

    @property
    def dropped_total(self) -> int:
        """Answered rows lost: none by construction (kept for the metrics)."""
        return 0

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> PredictionLog:
        """Start the background threads: fsync cadence and idle rotation in one,
        compaction (when `compact`) in the other."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="prediction-log", daemon=True
            )
            self._thread.start()
        opts = self.options
        if opts.compact and opts.compaction_process:
            if self._compactor_process is None:
                self._compactor_process = CompactorProcess(
                    self.log_dir,
                    row_group_rows=opts.row_group_rows,
                    nice=opts.compaction_nice,
                ).start()
        elif opts.compact and self._compactor is None:
            self._compactor = threading.Thread(
                target=self._run_compaction, name="prediction-log-compact", daemon=True
            )
            self._compactor.start()
        return self

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Sync the open segment to disk (rows are already readable without it)."""
        if not self._lock.acquire(timeout=timeout_s):
            return False
        try:
            self._sync_locked()
        except OSError as exc:
            self._warn("fsync failed: %s", exc)
            return False
        finally:
            self._lock.release()
        return True

    def rotate(self) -> None:
        """Close the open segment now (compacted by the background thread)."""
        with self._lock:
            self._rotate_locked()
        with self._wake:
            self._wake.notify_all()

    def close(self, timeout_s: float = 10.0) -> bool:
        """Refuse new rows, close the open segment, compact and stop the thread."""
        with self._lock:
            self._closing = True
            self._rotate_locked()
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        started = [t for t in (self._thread, self._compactor) if t is not None]
        deadline = time.monotonic() + timeout_s
        for thread in started:
            thread.join(max(deadline - time.monotonic(), 0.0))
        stopped = True
        if self._compactor_process is not None:
            # It compacts what is free (this writer's last segment too) and exits.
            stopped = self._compactor_process.stop(max(deadline - time.monotonic(), 1))
            self._compactor_process = None
        if not started:
            self.compact_pending()
        return stopped and not any(t.is_alive() for t in started)

    # --- background ---------------------------------------------------------------

    def _run(self) -> None:
        opts = self.options
        tick_s = min(0.5, opts.fsync_interval_s or 0.5, opts.rotate_age_s)
        next_sync = time.monotonic()
        while True:
            with self._wake:
                if not self._stopping:
                    self._wake.wait(tick_s)
                stopping = self._stopping
            now = time.monotonic()
            try:
                if opts.fsync_interval_s > 0 and now >= next_sync:
                    next_sync = now + opts.fsync_interval_s
                    self._sync_open()
                self._rotate_if_old()
                self._report_counts()
            except Exception:
                log.exception("prediction log: background step failed")
            if stopping:
                self._report_counts()
                return

    def _run_compaction(self) -> None:
        """Compact closed segments as they come and orphans on their cadence, at
        the CPU priority `compaction_nice` (Linux gives each thread its own)."""
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(
                os.PRIO_PROCESS, threading.get_native_id(), self.options.compaction_nice
            )
        opts = self.options
        tick_s = min(0.5, opts.rotate_age_s)
        next_orphans = time.monotonic()
        while True:
            with self._wake:
                if not self._stopping and not self._closed:
                    self._wake.wait(tick_s)
                stopping = self._stopping
            try:
                self.compact_pending()
                if time.monotonic() >= next_orphans:
                    next_orphans = time.monotonic() + opts.orphan_check_s
                    self._compact_orphans()
            except Exception:
                log.exception("prediction log: compaction failed")
            if stopping:
                self.compact_pending()
                return

    def _report_counts(self) -> None:
        written, refused = self._written, self._refused
        done_written, done_refused = self._reported
        self._reported = (written, refused)
        for callback, delta in (
            (self._on_written, written - done_written),
            (self._on_refused, refused - done_refused),
        ):
            if callback is not None and delta:
                try:
                    callback(delta)
                except Exception:
                    log.exception("prediction log: counter callback failed")

    def _sync_open(self) -> None:
        # fsync outside the append lock (on a duplicate of the descriptor, which
        # rotation cannot close under us) so appends do not wait for the disk.
        with self._lock:
            segment = self._segment
            if segment is None or segment.synced:
                return
            fd = os.dup(segment.fd)
            segment.synced = True
        try:
            os.fsync(fd)
        except OSError as exc:
            self._warn("fsync failed: %s", exc)
        finally:
            os.close(fd)

    def _sync_locked(self) -> None:
        segment = self._segment
        if segment is not None and not segment.synced:
            os.fsync(segment.fd)
            segment.synced = True

    def _rotate_if_old(self) -> None:
        with self._lock:
            segment = self._segment
            if (
                segment is not None
                and time.monotonic() - segment.opened >= self.options.rotate_age_s
            ):
                self._rotate_locked()

    def _rotate_locked(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        try:
            segment.close()
        except OSError as exc:
            self._warn("closing a segment failed: %s", exc)
        self._closed_one(segment.path)

    def _abandon_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is not None:
            with contextlib.suppress(OSError):
                os.close(segment.fd)
            self._closed_one(segment.path)

    def _closed_one(self, path: Path) -> None:
        # A compactor process finds closed segments by their free lock: nothing
        # to hand it, and nothing to keep.
        if self._compactor_process is None:
            self._closed.append(path)

    def compact_pending(self) -> None:
        """Compact this writer's closed segments into Parquet (when `compact`);
        a segment another compactor is working on is left to it."""
        if not self.options.compact:
            return
        with self._lock:
            pending, self._closed = self._closed, []
        for path in pending:
            try:
                compact_if_free(path, row_group_rows=self.options.row_group_rows)
            except Exception:
                log.exception("prediction log: compacting %s failed", path.name)

    def _compact_orphans(self) -> None:
        """Compact write-ahead segments whose writer is gone (killed, crashed);
        this writer's own closed segments are `compact_pending`'s."""
        mine = [self._segment.path] if self._segment is not None else []
        compact_free_segments(
            self.log_dir,
            row_group_rows=self.options.row_group_rows,
            skip={*mine, *self._closed},
        )

    def _warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning("prediction log: " + message, *args)
