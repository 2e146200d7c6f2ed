"""Workers die with the server: SIGKILL to the server's process group (which
BentoML's workers are not in) frees the port, and a restart on it comes up."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

import psutil
import pytest

from tests.reliability.helpers import alive, process_tree, stop, wait_until
from tests.servers import free_port, start_service

pytestmark = pytest.mark.integration


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_killing_the_servers_process_group_takes_its_workers_and_frees_the_port(
    tmp_path: Path, default_pack: Path
) -> None:
    port = free_port()
    first = start_service(tmp_path / "data", default_pack, port=port)
    tree = process_tree(first.process.pid)
    workers = [p for p in tree if p.pid != first.process.pid]
    try:
        assert workers, "no worker process found"
        # The workers really are outside the group the signal goes to.
        assert all(os.getpgid(w.pid) != first.process.pid for w in workers)
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=10)
        wait_until(lambda: not alive(workers), timeout_s=40)
        wait_until(lambda: _port_is_free(port), timeout_s=10)
    finally:
        for proc in tree:  # whatever survived a failed check
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
    second = start_service(tmp_path / "data", default_pack, port=port)
    try:
        with second.client() as c:
            assert c.get("/info").status_code == 200
    finally:
        stop(second)
