"""No acknowledged report is lost and none is stored twice when the server is killed.

Threads send reports, each under its own Idempotency-Key, while the server is killed
with SIGKILL (arbiter and workers: no shutdown hook runs). The server is restarted
on the same data directory or database, every request that got no 2xx is sent again
with the same key (what a client following the API contract does), and the store is
read directly: every key is stored exactly once, under the report id its first 2xx
named. Run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.helpers import (
    alive,
    database_url,
    direct_report,
    kill_tree,
    process_tree,
    serving,
    stored_reports,
    wait_until,
)
from tests.servers import ServiceProcess, start_service

pytestmark = pytest.mark.integration

THREADS = 6
ACKS_BEFORE_KILL = 60


@dataclass
class Attempt:
    key: str
    body: dict[str, Any]
    status: int | None = None  # None: no answer (connection refused or cut)
    report_id: str | None = None
    cut: bool = False  # sent, then the connection died before the answer

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _send(client: httpx.Client, attempt: Attempt) -> bool:
    """Send one report; False when no answer came (the server is gone)."""
    try:
        r = client.post(
            "/report", json=attempt.body, headers={"Idempotency-Key": attempt.key}
        )
    except httpx.HTTPError as exc:
        attempt.status, attempt.report_id = None, None
        attempt.cut = not isinstance(exc, httpx.ConnectError)
        return False
    attempt.status = r.status_code
    attempt.report_id = r.json().get("id") if attempt.acknowledged else None
    return True


def _report_under_load_then_kill(svc: ServiceProcess) -> list[Attempt]:
    attempts: list[Attempt] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_thread(t: int) -> None:
        with httpx.Client(base_url=svc.url, timeout=10) as client:
            i = 0
            answered = True
            while answered and not stop.is_set():
                attempt = Attempt(f"crash-{t}-{i}", direct_report(t * 100_000 + i))
                with lock:
                    attempts.append(attempt)
                answered = _send(client, attempt)
                i += 1

    threads = [
        threading.Thread(target=client_thread, args=(t,)) for t in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(
            lambda: sum(a.acknowledged for a in list(attempts)) >= ACKS_BEFORE_KILL,
            timeout_s=60,
            interval_s=0.01,
        )
        kill_tree(svc.process.pid)  # SIGKILL, mid-stream
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    return attempts


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_acknowledged_report_survives_sigkill_exactly_once(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    default_pack: Path,
) -> None:
    overrides = {"FLYWHEEL_FEEDBACK__REPORT_RATE_PER_MINUTE": "1000000"}
    if backend == "postgres":
        overrides["FLYWHEEL_FEEDBACK__DATABASE_URL"] = request.getfixturevalue(
            "own_postgres"
        )
    data_dir = tmp_path / "svc"
    first = start_service(data_dir, default_pack, **overrides)
    tree = process_tree(first.process.pid)
    assert len(tree) >= 2, "expected the arbiter and a worker"
    try:
        attempts = _report_under_load_then_kill(first)
    finally:
        kill_tree(first.process.pid)
    assert not alive(tree), "a worker outlived the kill"
    acked = {a.key: a.report_id for a in attempts if a.acknowledged}
    unanswered = [a for a in attempts if not a.acknowledged]
    assert len(acked) >= ACKS_BEFORE_KILL
    assert any(a.cut for a in unanswered), "the kill cut no request mid-flight"

    with serving(data_dir, default_pack, **overrides) as second:
        with second.client() as client:
            for attempt in unanswered:
                _send(client, attempt)
                assert attempt.acknowledged, (attempt.key, attempt.status)
            # Acknowledged ones, sent again, are answered from the store.
            replays = [
                Attempt(key, next(a.body for a in attempts if a.key == key))
                for key in sorted(acked)[:10]
            ]
            for replay in replays:
                _send(client, replay)
                assert replay.status == 200, (replay.key, replay.status)
                assert replay.report_id == acked[replay.key]
        stored = stored_reports(database_url(second))

    keys = Counter(key for _, key in stored)
    duplicated = {key: n for key, n in keys.items() if n > 1}
    assert not duplicated
    assert set(keys) == {a.key for a in attempts}
    ids = {key: report_id for report_id, key in stored}
    lost = {key for key, report_id in acked.items() if ids.get(key) != report_id}
    assert not lost, f"{len(lost)} acknowledged reports missing or changed: {lost}"
