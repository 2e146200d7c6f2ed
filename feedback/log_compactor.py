"""The prediction log's compaction in a process of its own.

Compacting a closed write-ahead segment into Parquet costs about 0.5 µs of CPU
per row, a third of what answering a 1,000-row column request costs. Done by a
thread of the serving worker, even one at the lowest CPU priority, it took a
quarter of the worker's column throughput on a 2-core machine: the thread holds
the worker's interpreter lock while it works, so the requests wait for it however
idle the other core is. A process of its own (one per writer, niced) has no lock
to share: it takes the CPU the workers leave.

`python -m feedback.log_compactor LOG_DIR --parent PID` compacts every segment
no living writer holds (`feedback.prediction_log.compact_if_free`) every
`--interval` seconds, and exits when its parent is gone, after one last pass
(the parent's own segment is free then). `CompactorProcess` starts and stops
one for a `PredictionLog`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from feedback.log_segments import list_segments

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 30.0


def compact_free_segments(log_dir: Path, *, row_group_rows: int) -> int:
    """Compact every write-ahead segment under `log_dir` that no living writer
    holds; returns how many were compacted."""
    from feedback.prediction_log import compact_if_free

    done = 0
    for f in list_segments(log_dir):
        if f.is_wal and compact_if_free(f.path, row_group_rows=row_group_rows):
            done += 1
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
