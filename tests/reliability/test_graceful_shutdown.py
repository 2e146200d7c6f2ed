"""SIGTERM drains: requests in flight are answered, and every answered prediction,
those answered before and those in flight, is in the prediction log afterwards.

Requests "in flight" are uploads that have sent their headers and half their
body: the worker is already running their handler.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.reliability.helpers import (
    ADELIE,
    alive,
    kill_tree,
    process_tree,
    stored_prediction_ids,
)
from tests.servers import start_service

pytestmark = pytest.mark.integration

IN_FLIGHT = 3


def _start_upload(port: int, body: bytes, sent: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[:sent])
    return sock


def _finish_upload(sock: socket.socket, rest: bytes) -> tuple[int, dict[str, object]]:
    """Send the rest of the body; (status, JSON body) of the answer."""
    with sock:
        sock.sendall(rest)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before an answer: {data!r}"
            data += chunk
        head, _, payload = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(line.split(":", 1)[1])
            for line in lines[1:]
            if line.lower().startswith("content-length:")
        )
        while len(payload) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed in the middle of the answer"
            payload += chunk
    return status, json.loads(payload[:length])


def _predict(client: httpx.Client) -> str:
    r = client.post("/predict", json={"instances": [ADELIE]})
    assert r.status_code == 200, r.text
    return str(r.json()["predictions"][0]["prediction_id"])


def test_sigterm_answers_in_flight_requests_and_flushes_the_log(
    tmp_path: Path, default_pack: Path
) -> None:
    svc = start_service(tmp_path / "svc", default_pack)
    tree = process_tree(svc.process.pid)
    port = int(svc.url.rsplit(":", 1)[1])
    body = json.dumps({"instances": [ADELIE]}).encode()
    try:
        with svc.client() as c:
            queued = [_predict(c) for _ in range(20)]
        # Appended before answering: in the open segment already.
        assert set(queued) <= stored_prediction_ids(svc)
        uploads = [_start_upload(port, body, 10) for _ in range(IN_FLIGHT)]
        time.sleep(0.5)  # the worker has read the headers and called the app
        os.killpg(svc.process.pid, signal.SIGTERM)
        time.sleep(1.0)  # shutdown has begun while the uploads wait
        answers = [_finish_upload(sock, body[10:]) for sock in uploads]
        code = svc.process.wait(timeout=30)
    finally:
        kill_tree(svc.process.pid)
    assert not alive(tree)
    assert [status for status, _ in answers] == [200] * IN_FLIGHT, answers
    assert code == 0
    in_flight = [
        p["prediction_id"]  # type: ignore[index]
        for _, answer in answers
        for p in answer["predictions"]  # type: ignore[union-attr]
    ]
    stored = stored_prediction_ids(svc)
    missing = (set(queued) | set(in_flight)) - stored
    assert not missing, f"{len(missing)} logged predictions lost at shutdown"
