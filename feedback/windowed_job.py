"""Run a job once per time window across every process that shares the store.

Windows are fixed slices of wall time (`interval_s` long, aligned to the epoch, by
the clock of `feedback.leases.database_now`). Each process polls; the first to find
the current window not done takes the job's lease, runs the job while a heartbeat
renews the lease, records the window as done (fenced by the lease's token), and
releases it. A holder that dies mid-run stops renewing: its lease expires after
`ttl_s` and the next poll elsewhere runs the window again. A holder that loses the
lease while running (a pause longer than the ttl, a partition) is told through
`on_lost` so it can stop, and its `mark_done` is refused.

A job that reads what arrived since the last run (`run_window_if_due`) is told
its window and where the last completed run's window ended, so whichever
process runs next picks up from there, with no state of its own.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from feedback import leases
from feedback.db import SessionFactory
from feedback.leases import Lease

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    RAN = "ran"
    """This process ran the window's job and recorded it done."""
    DONE = "done"
    """The current window's job already ran (here or elsewhere)."""
    HELD = "held"
    """Another process holds the lease (running it now, or died and not expired)."""
    LOST = "lost"
    """The lease was lost while the job ran; the window stays not done."""


@dataclass(frozen=True)
class Window:
    """The window a run is for, and what the runs before it covered."""

    start: datetime
    end: datetime
    previous_end: datetime | None
    """End of the window of the last completed run (None before the first)."""


def window_bounds(now: datetime, interval_s: float) -> tuple[datetime, datetime]:
    """The window holding `now`: [start, end), aligned to multiples of interval_s."""
    epoch = now.timestamp()
    start = epoch - epoch % interval_s
    return (
        datetime.fromtimestamp(start, UTC),
        datetime.fromtimestamp(start + interval_s, UTC),
    )


class OncePerWindow:
    def __init__(
        self,
        sessions: SessionFactory,
        name: str,
        *,
        interval_s: float,
        ttl_s: float,
        poll_s: float,
        holder: str | None = None,
    ):
        if ttl_s <= 0 or interval_s <= 0 or poll_s <= 0:
            raise ValueError("interval_s, ttl_s and poll_s must be positive")
        self.sessions = sessions
        self.name = name
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self.holder = holder or leases.new_holder_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_if_due(
        self, job: Callable[[], object], on_lost: Callable[[], object]
    ) -> Outcome:
        """One poll: run `job` here if the current window is not done and the lease
        is free. `on_lost` is called (from the heartbeat thread) if the lease is
        lost while `job` runs."""
        return self.run_window_if_due(lambda _window: job(), on_lost)

    def run_window_if_due(
        self, job: Callable[[Window], object], on_lost: Callable[[], object]
    ) -> Outcome:
        """`run_if_due` for a job that is given its `Window`."""
        with self.sessions() as session:
            start, end = window_bounds(leases.database_now(session), self.interval_s)
            current = leases.read(session, self.name)
            if _done(current, start):
                return Outcome.DONE
            lease = leases.acquire(
                session, self.name, holder=self.holder, ttl_s=self.ttl_s
            )
            if lease is None:
                return Outcome.HELD
            if _done(lease, start):  # finished elsewhere between our read and acquire
                leases.release(session, lease)
                return Outcome.DONE
        window = Window(start, end, lease.done_until)
        heartbeat = _Heartbeat(self.sessions, lease, self.ttl_s, on_lost)
        heartbeat.start()
        try:
            job(window)
        finally:
            final = heartbeat.stop()
        if final is None:
            log.warning("lost the %s lease while running; window not done", self.name)
            return Outcome.LOST
        with self.sessions() as session:
            marked = leases.mark_done(session, final, until=end)
            leases.release(session, final)
        if not marked:
            log.warning("the %s lease changed hands before the run ended", self.name)
            return Outcome.LOST
        return Outcome.RAN

    def start(self, job: Callable[[], object], on_lost: Callable[[], object]) -> None:
        """Poll every `poll_s` in a daemon thread until `stop`."""
        self.start_windowed(lambda _window: job(), on_lost)

    def start_windowed(
        self, job: Callable[[Window], object], on_lost: Callable[[], object]
    ) -> None:
        """`start` for a job that is given its `Window`."""

        def loop() -> None:
            while not self._stop.wait(self.poll_s):
                try:
                    self.run_window_if_due(job, on_lost)
                except Exception:
                    log.exception("%s: scheduled run failed", self.name)

        self._thread = threading.Thread(target=loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _done(lease: Lease | None, window_start: datetime) -> bool:
    return (
        lease is not None
        and lease.done_until is not None
        and lease.done_until > window_start
    )


class _Heartbeat:
    """Renews a lease every ttl/3 while a job runs; reports its loss once."""

    def __init__(
        self,
        sessions: SessionFactory,
        lease: Lease,
        ttl_s: float,
        on_lost: Callable[[], object],
    ):
        self.sessions = sessions
        self.lease: Lease | None = lease
        self.ttl_s = ttl_s
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            lease = self.lease
            assert lease is not None
            try:
                with self.sessions() as session:
                    self.lease = leases.renew(session, lease, ttl_s=self.ttl_s)
            except Exception:
                # The store is unreachable: keep trying until the lease would have
                # expired by our own clock, then count it lost.
                log.warning("could not renew the %s lease", lease.name, exc_info=True)
                margin = timedelta(seconds=self.ttl_s / 3)
                if datetime.now(UTC) + margin < lease.expires_at:
                    continue
                self.lease = None
            if self.lease is None:
                self.on_lost()
                return

    def stop(self) -> Lease | None:
        """Stop renewing; the lease as last renewed, or None if it was lost."""
        self._stop.set()
        self._thread.join(timeout=self.ttl_s)
        return self.lease
