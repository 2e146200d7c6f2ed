"""A service started on a picked port that someone else takes first starts anyway.

`free_port` releases the port it finds, so between the pick and the service's
bind another process can take it. The start then retries on a new pick.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from service import process
from tests.servers import start_service, stop_service_process

pytestmark = pytest.mark.integration


def test_a_start_whose_picked_port_is_taken_retries_on_a_new_one(
    tmp_path: Path, default_pack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        picks = iter([taken_port])
        real_pick = process.free_port
        monkeypatch.setattr(
            process, "free_port", lambda: next(picks, None) or real_pick()
        )

        svc = start_service(tmp_path / "data", default_pack)
        try:
            assert not svc.url.endswith(f":{taken_port}")
            assert httpx.get(f"{svc.url}/readyz", timeout=10).status_code == 200
            first_log = tmp_path / "data" / f"service-{taken_port}.log"
            assert "Address already in use" in first_log.read_text(errors="replace")
        finally:
            stop_service_process(svc.process)
