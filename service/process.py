"""Start and stop the real service (`python -m service.cli serve`) as a child process.

Used by the demo, the benchmark and the tests. Each server gets its own data
directory (so its own BentoML home and Prometheus multiprocess dir, database and
state file), listens on 127.0.0.1 only, and is stopped with SIGTERM, which must
drain and exit cleanly (SIGKILL after a timeout).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    admin_token: str | None = None

    def client(self, **kw: object) -> httpx.Client:
        kw.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, **kw)  # type: ignore[arg-type]

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def service_env(data_dir: Path, pack_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment minus any FLYWHEEL_* settings, plus these and `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(
        {
            "FLYWHEEL_DATA_DIR": str(data_dir),
            "FLYWHEEL_PACK_DIR": str(pack_dir),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


class PortTaken(RuntimeError):
    """The service exited before ready because an address it binds was in use."""


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 180
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")
            error = PortTaken if "Address already in use" in log else RuntimeError
            raise error(
                f"service exited with {process.returncode} before ready:\n"
                + log[-4000:]
            )
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(
        f"service not ready in {timeout_s}s:\n"
        + log_path.read_text(errors="replace")[-4000:]
    )


# A port picked by `free_port` is free only until someone binds it: another
# process (or BentoML's own ZMQ sockets, which pick ports the same way) can take
# it before the service does. A start on a picked port is retried on a new one.
PICKED_PORT_TRIES = 3


def start_service(
    data_dir: Path,
    pack_dir: Path,
    *,
    port: int | None = None,
    ready_timeout_s: float = 90,
    **overrides: str,
) -> ServiceProcess:
    """Start the service and wait until ready; `port=None` picks a free one."""
    if port is not None:
        return _start_on(data_dir, pack_dir, port, ready_timeout_s, overrides)
    for _ in range(PICKED_PORT_TRIES - 1):
        try:
            return _start_on(
                data_dir, pack_dir, free_port(), ready_timeout_s, overrides
            )
        except PortTaken:
            continue
    return _start_on(data_dir, pack_dir, free_port(), ready_timeout_s, overrides)


def _start_on(
    data_dir: Path,
    pack_dir: Path,
    port: int,
    ready_timeout_s: float,
    overrides: dict[str, str],
) -> ServiceProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    env = service_env(data_dir, pack_dir, **overrides)
    log_path = data_dir / f"service-{port}.log"
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log_path, timeout_s=ready_timeout_s)
    except BaseException:
        stop_service_process(process)
        raise
    return ServiceProcess(
        url=url,
        data_dir=data_dir,
        process=process,
        log_path=log_path,
        env=env,
        admin_token=env.get("FLYWHEEL_SECURITY__ADMIN_TOKEN"),
    )


def process_tree(pid: int) -> list[int]:
    """The process and every descendant (empty when it is gone)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [pid, *(c.pid for c in children)]


def kill_tree(pids: list[int], sig: int = signal.SIGKILL) -> None:
    """Send `sig` (SIGKILL) to these processes, ignoring those already gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop_service_process(
    process: subprocess.Popen[bytes], timeout_s: float = 30
) -> int | None:
    """SIGTERM (graceful drain), then SIGKILL after `timeout_s`; None if it had to.

    BentoML's workers run in process groups of their own, so the whole process
    tree is collected first and anything left of it is killed at the end.
    """
    tree = process_tree(process.pid)[1:]
    code: int | None = process.poll()
    if code is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_tree([process.pid, *tree])
            process.wait(timeout=10)
            code = None
    kill_tree(tree)
    return code


@contextmanager
def running(
    data_dir: Path,
    pack_dir: Path,
    *,
    port: int | None = None,
    ready_timeout_s: float = 90,
    **overrides: str,
) -> Iterator[ServiceProcess]:
    svc = start_service(
        data_dir, pack_dir, port=port, ready_timeout_s=ready_timeout_s, **overrides
    )
    try:
        yield svc
    finally:
        if stop_service_process(svc.process) is None:
            raise RuntimeError("service did not stop within 30 s of SIGTERM")
