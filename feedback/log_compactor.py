"""The prediction log's compaction: closed write-ahead segments rewritten as
Parquet, by a process of its own.

`compact_segment` rewrites one segment (`write_segment_file` writes the Parquet
file); `compact_if_free` does so only while it holds the segment's lock, which a
living writer holds on its open segment and a compactor on the one it works on,
so no segment is compacted twice at once.

Compacting costs about 0.5 µs of CPU per row, a third of what answering a
1,000-row column request costs. Done by a thread of the serving worker, even one
at the lowest CPU priority, it took a quarter of the worker's column throughput
on a 2-core machine: the thread holds the worker's interpreter lock while it
works, so the requests wait for it however idle the other core is. A process of
its own (one per writer, niced) has no lock to share: it takes the CPU the
workers leave.

`python -m feedback.log_compactor LOG_DIR --parent PID` compacts every segment
no living writer holds every `--interval` seconds, and exits when its parent is
gone, after one last pass (the parent's own segment is free then).
`CompactorProcess` starts and stops one for a `PredictionLog`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feedback.log_sampling import with_review_columns
from feedback.log_segments import ID_RANGES_KEY, list_segments, parse_name, segment_name
from feedback.log_wal import read_wal

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 30.0
#: The columns whose values repeat from row to row (Parquet dictionary pages).
_REPEATING = (
    "created_at", "model_version", "policy_version", "context", "label", "reason",
    "trace",
)  # fmt: skip


def compact_if_free(wal: Path, *, row_group_rows: int) -> bool:
    """Compact a write-ahead segment unless a writer or another compactor holds
    its lock (taken for the while); True when it was compacted here."""
    try:
        fd = os.open(wal, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live writer, or a compactor on it now
        # Compacted by someone else between the listing and the lock: gone.
        if not wal.exists():
            return False
        compact_segment(wal, row_group_rows=row_group_rows)
        return True
    finally:
        os.close(fd)


def compact_segment(wal: Path, *, row_group_rows: int) -> Path | None:
    """Rewrite a closed write-ahead segment as a Parquet segment named by its
    time range, then remove it; returns the new file (None when it held no rows).

    The Parquet file appears under its final name in one rename, before the
    write-ahead file goes: readers see the rows in one of them (and prefer the
    Parquet file while both exist)."""
    table = read_wal(wal)
    if table is None or table.num_rows == 0:
        wal.unlink(missing_ok=True)
        return None
    ids = table.column("id")
    stamps = table.column("created_at").cast(pa.int64())
    id_ms = [int(v[:12], 16) for v in (_min(ids), _max(ids)) if len(v) == 32]
    time_ms = [_min(stamps) // 1000, _max(stamps) // 1000]
    start_ms, end_ms = min(id_ms + time_ms), max(id_ms + time_ms)
    name = parse_name(wal)
    writer = name.writer if name is not None else wal.stem
    target = wal.with_name(segment_name(start_ms, end_ms, writer))
    tmp = wal.with_name(f".tmp-{target.name}")
    # Decoded here anyway: what the review sampler decides by is added once.
    table = with_review_columns(table)
    write_segment_file(table, tmp, row_group_rows=row_group_rows)
    os.replace(tmp, target)
    wal.unlink(missing_ok=True)
    return target


def write_segment_file(table: pa.Table, path: Path, *, row_group_rows: int) -> None:
    """`table` as a Parquet segment: row groups of `row_group_rows`, statistics
    only for `id` and `created_at` (what readers prune by; the others only made
    the footer longer to parse), dictionary pages only for the columns that
    repeat (tried on ids and floats they cost half the writing time and made the
    file larger), and each row group's id range in the file's metadata, where a
    lookup reads it without walking the footer's statistics."""
    ranges = [
        [_min(part), _max(part)] if len(part) else ["~", ""]
        for part in (
            table.column("id").slice(at, row_group_rows)
            for at in range(0, table.num_rows, row_group_rows)
        )
    ]
    with pq.ParquetWriter(
        path,
        table.schema,
        compression="snappy",
        write_statistics=["id", "created_at"],
        use_dictionary=[n for n in _REPEATING if n in table.schema.names],
    ) as writer:
        writer.write_table(table, row_group_size=row_group_rows)
        # In the file's metadata only: tables read from the file do not carry it.
        writer.add_key_value_metadata({ID_RANGES_KEY: orjson.dumps(ranges).decode()})


def _min(column: pa.ChunkedArray) -> Any:
    return pc.min(column).as_py()


def _max(column: pa.ChunkedArray) -> Any:
    return pc.max(column).as_py()


def compact_free_segments(
    log_dir: Path, *, row_group_rows: int, skip: Collection[Path] = ()
) -> int:
    """Compact every write-ahead segment under `log_dir` that no living writer
    holds, but those in `skip`; returns how many were compacted. A segment that
    fails is logged and left for the next pass."""
    done = 0
    for f in list_segments(log_dir):
        if not f.is_wal or f.path in skip:
            continue
        try:
            done += compact_if_free(f.path, row_group_rows=row_group_rows)
        except Exception:
            log.exception("prediction log: compacting %s failed", f.path.name)
    return done


def run(
    log_dir: Path,
    *,
    parent: int,
    row_group_rows: int,
    interval_s: float,
    stop: threading.Event,
) -> None:
    """Compact until `stop` is set or the parent process is gone, then once more."""
    while not stop.is_set() and os.getppid() == parent:
        try:
            compact_free_segments(log_dir, row_group_rows=row_group_rows)
        except Exception:
            log.exception("prediction log: compaction failed")
        stop.wait(interval_s)
    with contextlib.suppress(Exception):
        compact_free_segments(log_dir, row_group_rows=row_group_rows)


class CompactorProcess:
    """A compactor process for one writer's log directory."""

    def __init__(
        self,
        log_dir: Path,
        *,
        row_group_rows: int,
        nice: int,
        interval_s: float = 0.5,
    ):
        self.argv = [
            sys.executable,
            "-m",
            "feedback.log_compactor",
            str(log_dir),
            "--parent",
            str(os.getpid()),
            "--row-group-rows",
            str(row_group_rows),
            "--nice",
            str(nice),
            "--interval",
            str(interval_s),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CompactorProcess:
        # Started with the project importable as the worker has it, in the
        # worker's process group (a kill of the group takes it too).
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, env.get("PYTHONPATH")) if p
        )
        self.process = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL)
        return self

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> bool:
        """Ask it to finish (the file it is on, then one last pass) and wait;
        True when it exited in time (else it is killed: a half-written Parquet
        file is never renamed into place, and its segment stays to compact)."""
        process, self.process = self.process, None
        if process is None:
            return True
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log_dir", type=Path)
    parser.add_argument("--parent", type=int, required=True, help="exit when gone")
    parser.add_argument("--row-group-rows", type=int, default=2048)
    parser.add_argument("--nice", type=int, default=19)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args(argv)
    if args.row_group_rows < 1 or args.interval <= 0 or not 0 <= args.nice <= 19:
        parser.error("--row-group-rows, --interval and --nice are out of range")
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(OSError):
        os.nice(args.nice)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.monotonic()
    run(
        args.log_dir,
        parent=args.parent,
        row_group_rows=args.row_group_rows,
        interval_s=args.interval,
        stop=stop,
    )
    log.debug("compactor ran %.1f s", time.monotonic() - started)


if __name__ == "__main__":
    main()
