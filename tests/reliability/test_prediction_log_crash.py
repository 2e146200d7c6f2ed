"""No answered prediction is lost when the server is killed with SIGKILL.

Threads send 100-row batches to /predict while the server (arbiter and workers)
is killed with SIGKILL: no shutdown hook runs, nothing is flushed. The server is
restarted on the same data directory; then every row of every answered batch is
in the prediction log's files, and a report by id succeeds for the first and last
row of every answered batch. Runs with the default fsync cadence (a SIGKILL does
not need fsync: an append reaches the OS before its answer is sent).
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from tests.reliability.helpers import (
    ADELIE,
    alive,
    kill_tree,
    process_tree,
    serving,
    stored_prediction_ids,
    wait_until,
)
from tests.servers import ServiceProcess, start_service

pytestmark = pytest.mark.integration

THREADS = 4
ROWS = 100
ANSWERS_BEFORE_KILL = 40


def _batch(t: int, i: int) -> dict[str, object]:
    mass = [3000 + (t * 997 + i + r) % 1500 for r in range(ROWS)]
    return {"instances": [{**ADELIE, "body_mass_g": m} for m in mass]}


def _predict_under_load_then_kill(svc: ServiceProcess) -> tuple[list[list[str]], int]:
    """(ids of every answered batch, requests that got no answer)."""
    answered: list[list[str]] = []
    unanswered = 0
    lock = threading.Lock()

    def client_thread(t: int) -> None:
        nonlocal unanswered
        with httpx.Client(base_url=svc.url, timeout=30) as client:
            i = 0
            while True:
                try:
                    r = client.post("/predict", json=_batch(t, i))
                except httpx.HTTPError:
                    with lock:
                        unanswered += 1
                    return  # the server is gone
                assert r.status_code == 200, r.text
                ids = [p["prediction_id"] for p in r.json()["predictions"]]
                with lock:
                    answered.append(ids)
                i += 1

    threads = [
        threading.Thread(target=client_thread, args=(t,)) for t in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(
            lambda: len(answered) >= ANSWERS_BEFORE_KILL, timeout_s=120, interval_s=0.01
        )
        kill_tree(svc.process.pid)  # SIGKILL, mid-stream
    finally:
        for thread in threads:
            thread.join(timeout=60)
    return answered, unanswered


def test_every_answered_prediction_survives_sigkill_and_can_be_reported(
    tmp_path: Path, default_pack: Path
) -> None:
    overrides = {"FLYWHEEL_FEEDBACK__REPORT_RATE_PER_MINUTE": "1000000"}
    data_dir = tmp_path / "svc"
    first = start_service(data_dir, default_pack, **overrides)
    tree = process_tree(first.process.pid)
    try:
        answered, unanswered = _predict_under_load_then_kill(first)
    finally:
        kill_tree(first.process.pid)
    assert not alive(tree), "a worker outlived the kill"
    assert len(answered) >= ANSWERS_BEFORE_KILL
    assert unanswered >= 1, "the kill cut no request mid-flight"
    every_id = {pid for ids in answered for pid in ids}
    assert len(every_id) == ROWS * len(answered)

    with serving(data_dir, default_pack, **overrides) as second:
        stored = stored_prediction_ids(second)
        lost = every_id - stored
        assert not lost, f"{len(lost)} answered rows missing after SIGKILL"
        with second.client() as client:
            failed = []
            for ids in answered:
                for pid in (ids[0], ids[-1]):
                    r = client.post(
                        "/report", json={"prediction_id": pid, "comment": "crash"}
                    )
                    if r.status_code != 201:
                        failed.append((pid, r.status_code, r.text))
        assert not failed, failed[:5]
