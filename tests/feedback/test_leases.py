"""Leases on real SQLite and PostgreSQL: one holder at a time, fencing tokens, and
a killed holder's job taken over once its lease expires."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from feedback import leases
from feedback.db import make_engine, migrate, session_factory
from feedback.models import Lease as LeaseRow
from feedback.windowed_job import OncePerWindow, Outcome, window_bounds

ROOT = Path(__file__).resolve().parents[2]
FAR_WINDOW_S = 10**7  # one window for the whole test: no boundary to cross


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    migrate(engine)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


def _wait_for(predicate: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout_s} s")


def test_a_held_lease_is_refused_to_others_until_released(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s:
        first = leases.acquire(s, "drift", holder="a", ttl_s=60)
        assert first is not None and first.token == 1
        assert leases.acquire(s, "drift", holder="b", ttl_s=60) is None
        again = leases.acquire(s, "drift", holder="a", ttl_s=60)
        assert again is not None and again.token == 1  # re-acquiring is renewing
        assert leases.release(s, first)
        second = leases.acquire(s, "drift", holder="b", ttl_s=60)
        assert second is not None and second.holder == "b" and second.token == 2
        assert leases.acquire(s, "other-job", holder="a", ttl_s=60) is not None


def test_an_expired_lease_changes_hands_and_fences_the_old_holder(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s:
        old = leases.acquire(s, "drift", holder="a", ttl_s=0.3)
        assert old is not None
        assert leases.acquire(s, "drift", holder="b", ttl_s=60) is None
        time.sleep(0.5)
        new = leases.acquire(s, "drift", holder="b", ttl_s=60)
        assert new is not None and new.token == old.token + 1
        # The old holder wakes up: it can neither renew, release nor record work.
        assert leases.renew(s, old, ttl_s=60) is None
        assert not leases.release(s, old)
        assert not leases.mark_done(s, old, until=old.expires_at)
        assert leases.mark_done(s, new, until=new.expires_at)
        stored = leases.read(s, "drift")
        assert stored is not None and stored.holder == "b"
        assert stored.done_until == new.expires_at


def test_renewing_extends_the_expiry(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        lease = leases.acquire(s, "drift", holder="a", ttl_s=1)
        assert lease is not None
        renewed = leases.renew(s, lease, ttl_s=120)
        assert renewed is not None and renewed.token == lease.token
        assert renewed.expires_at - lease.expires_at > timedelta(seconds=100)


def test_the_window_job_runs_once_however_many_pollers(
    sessions: sessionmaker[Session],
) -> None:
    runs: list[str] = []
    lock = threading.Lock()
    pollers = [
        OncePerWindow(sessions, "drift", interval_s=FAR_WINDOW_S, ttl_s=30, poll_s=1)
        for _ in range(6)
    ]
    outcomes: list[Outcome] = []

    def poll(p: OncePerWindow) -> None:
        for _ in range(5):
            outcome = p.run_if_due(lambda: runs.append(p.holder), lambda: None)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=poll, args=(p,)) for p in pollers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(runs) == 1, runs
    assert outcomes.count(Outcome.RAN) == 1
    assert set(outcomes) <= {Outcome.RAN, Outcome.DONE, Outcome.HELD}


def test_the_next_window_runs_again(sessions: sessionmaker[Session]) -> None:
    runs: list[int] = []
    job = OncePerWindow(sessions, "drift", interval_s=0.5, ttl_s=30, poll_s=1)
    with sessions() as s:
        before = leases.database_now(s)
    assert job.run_if_due(lambda: runs.append(1), lambda: None) is Outcome.RAN
    with sessions() as s:
        stored = leases.read(s, "drift")
        after = leases.database_now(s)
    # Done up to the end of the window the run started in.
    assert stored is not None and stored.done_until is not None
    assert stored.done_until.timestamp() % 0.5 == 0
    assert before < stored.done_until <= window_bounds(after, 0.5)[1]
    _wait_for(lambda: job.run_if_due(lambda: runs.append(2), lambda: None)
              is Outcome.RAN, timeout_s=5)  # fmt: skip
    assert runs == [1, 2]


def test_a_holder_that_loses_its_lease_is_told_and_its_window_stays_open(
    sessions: sessionmaker[Session],
) -> None:
    lost = threading.Event()
    job = OncePerWindow(sessions, "drift", interval_s=FAR_WINDOW_S, ttl_s=0.6, poll_s=1)

    def steal_then_wait() -> None:
        # Another process takes the lease over (as if ours had expired).
        with sessions() as s:
            s.execute(update(LeaseRow).values(holder="thief"))
            s.commit()
        assert lost.wait(timeout=5)

    assert job.run_if_due(steal_then_wait, lost.set) is Outcome.LOST
    with sessions() as s:
        stored = leases.read(s, "drift")
    assert stored is not None and stored.done_until is None


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.feedback.lease_holder", *args]


def test_a_killed_holder_is_taken_over_after_its_lease_expires(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    # Long enough that a loaded machine still checks "held" well before the dead
    # holder's last renewal expires (it renews every ttl/3).
    ttl_s = 6.0
    holder = subprocess.Popen(
        _python("hold", db_url, "drift", str(ttl_s), str(started)),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(started.exists, timeout_s=30)
        time.sleep(ttl_s / 2)  # the heartbeat has renewed at least once
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
    runs: list[str] = []
    successor = OncePerWindow(
        sessions, "drift", interval_s=FAR_WINDOW_S, ttl_s=30, poll_s=1
    )
    with sessions() as s:
        dead = leases.read(s, "drift")
    assert dead is not None and dead.holder == started.read_text()
    # Until the dead holder's lease expires nobody may run the window...
    assert successor.run_if_due(lambda: runs.append("early"), lambda: None) is (
        Outcome.HELD
    )
    # ...then exactly one successor does, once.
    outcomes: list[Outcome] = []

    def poll() -> bool:
        outcomes.append(successor.run_if_due(lambda: runs.append("b"), lambda: None))
        return outcomes[-1] is not Outcome.HELD

    _wait_for(poll, timeout_s=ttl_s * 5)
    assert outcomes[-1] is Outcome.RAN and runs == ["b"]
    with sessions() as s:
        taken = leases.read(s, "drift")
    assert taken is not None and taken.token == dead.token + 1
    assert successor.run_if_due(lambda: runs.append("again"), lambda: None) is (
        Outcome.DONE
    )


def test_competing_processes_never_hold_the_lease_at_once(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    procs = [
        subprocess.Popen(
            _python("contend", db_url, "section", "80", str(tmp_path), "4"),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["overlaps"] for r in results) == 0
    held = [r for r in results if r["tokens"]]
    assert len(held) >= 2, "the lease never changed hands: the test proves nothing"
    # A token names one holder: no two processes ever got the same one.
    owner: dict[int, str] = {}
    for r in results:
        for token in r["tokens"]:
            assert owner.setdefault(token, r["holder"]) == r["holder"]
