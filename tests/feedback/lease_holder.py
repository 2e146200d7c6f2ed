"""A separate process that competes for a lease, for the lease tests.

python -m tests.feedback.lease_holder hold DB NAME TTL_S STARTED_FILE
    take the window's job and "run" it forever (a test SIGKILLs it)
python -m tests.feedback.lease_holder contend DB NAME ROUNDS DIR PROCESSES
    waits until PROCESSES contenders have started (so that they contend, however
    slowly a loaded machine starts them), then ROUNDS times: acquire; if ours,
    enter a section guarded by an O_EXCL file (finding it taken means two holders
    at once), record the token, release.
    Prints one JSON line: {"holder", "tokens", "overlaps"}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from feedback import leases
from feedback.db import make_engine, session_factory
from feedback.windowed_job import OncePerWindow

FAR_WINDOW_S = 10**7  # one window for the whole test: no boundary to cross


def hold(db: str, name: str, ttl_s: float, started: Path) -> None:
    sessions = session_factory(make_engine(db))
    job = OncePerWindow(sessions, name, interval_s=FAR_WINDOW_S, ttl_s=ttl_s, poll_s=1)

    def run_forever() -> None:
        started.write_text(job.holder)
        while True:
            time.sleep(1)

    outcome = job.run_if_due(run_forever, on_lost=lambda: None)
    print(outcome.value)  # reached only if the lease was not ours


def contend(db: str, name: str, rounds: int, section_dir: Path, processes: int) -> None:
    sessions = session_factory(make_engine(db))
    holder = leases.new_holder_id()
    _all_started(section_dir, processes)
    marker = section_dir / "inside"
    tokens: list[int] = []
    overlaps = 0
    for _ in range(rounds):
        with sessions() as session:
            lease = leases.acquire(session, name, holder=holder, ttl_s=30)
        if lease is None:
            # A poller waits before it tries again; without the pause the losers
            # spend all their rounds while the first holder is still in its first.
            time.sleep(0.01)
            continue
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            overlaps += 1
        else:
            os.close(fd)
            time.sleep(0.002)
            marker.unlink()
        tokens.append(lease.token)
        with sessions() as session:
            leases.release(session, lease)
        # Let another contender in: SQLite's locks are not fair (a waiting
        # connection sleeps up to 100 ms between tries), so a holder that comes
        # back at once can keep the lease for every round.
        time.sleep(0.03)
    print(json.dumps({"holder": holder, "tokens": tokens, "overlaps": overlaps}))


def _all_started(section_dir: Path, processes: int, timeout_s: float = 90) -> None:
    (section_dir / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(section_dir.glob("ready-*"))) < processes:
        if time.monotonic() > deadline:
            sys.exit(f"only some of {processes} contenders started in {timeout_s} s")
        time.sleep(0.01)


if __name__ == "__main__":
    mode, db, name, *rest = sys.argv[1:]
    if mode == "hold":
        hold(db, name, float(rest[0]), Path(rest[1]))
    elif mode == "contend":
        contend(db, name, int(rest[0]), Path(rest[1]), int(rest[2]))
    else:
        sys.exit(f"unknown mode {mode!r}")
