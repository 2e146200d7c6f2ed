"""Start and stop the servers the benchmark compares, each on its own loopback port.

Every server gets its own BentoML home (so its own Prometheus multiprocess dir,
which BentoML wipes at start) under the benchmark's temporary directory, and the
same model pack through `FLYWHEEL_PACK_DIR`. The full service also gets its own
data dir (SQLite store, state file) with the drift schedule off and the report rate
limit raised, so the benchmark measures serving and not the rate limiter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from service import process as service_process
from service.process import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# name -> (what it is, how to start it: "bentoml:<module:Class>",
# "uvicorn:<module:factory>", or "service" for `python -m service.cli serve`)
SERVERS: dict[str, tuple[str, str]] = {
    "bare-defaults": (
        "BentoML @bentoml.api at defaults",
        "bentoml:loadtests.bare_service:BareDefaults",
    ),
    "bare-tuned": (
        "BentoML async @bentoml.api, access log off, GC frozen",
        "bentoml:loadtests.bare_service:BareTuned",
    ),
    "mounted-asgi": (
        "BentoML serving a mounted raw ASGI app",
        "bentoml:loadtests.bare_service:BareMounted",
    ),
    "raw-uvicorn": (
        "the raw ASGI app on plain uvicorn (ceiling)",
        "uvicorn:loadtests.raw_app:make_raw_app",
    ),
    "full": ("the full service (guardrails, logging, metrics)", "service"),
}
# Experiments (`--variants`): the full service's app under other serving configs.
VARIANTS: dict[str, tuple[str, str]] = {
    "full-traced": (
        "full, OpenTelemetry middleware on every request (trace_requests on)",
        "bentoml:loadtests.variants:FullTraced",
    ),
    "full-nobentometrics": (
        "full, BentoML metrics off (no traffic-metrics middleware)",
        "bentoml:loadtests.variants:FullNoBentoMetrics",
    ),
    "full-nolog": (
        "full, prediction log detached",
        "bentoml:loadtests.variants:FullNoLog",
    ),
    "full-noourmetrics": (
        "full, our Prometheus metrics detached",
        "bentoml:loadtests.variants:FullNoOurMetrics",
    ),
    "full-uvicorn": (
        "the full FastAPI app on plain uvicorn, no BentoML",
        "uvicorn:loadtests.variants:make_full_app",
    ),
}
ALL = SERVERS | VARIANTS


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def server_env(name: str, work: Path, pack_dir: Path) -> dict[str, str]:
    data = work / name
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(
        {
            "FLYWHEEL_DATA_DIR": str(data),
            "FLYWHEEL_PACK_DIR": str(pack_dir),
            "FLYWHEEL_MONITORING__DRIFT_INTERVAL_S": "0",
            "FLYWHEEL_FEEDBACK__REPORT_RATE_PER_MINUTE": "1000000",
            "BENTOML_HOME": str(data / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "ORT_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def command(name: str, port: int) -> list[str]:
    how = ALL[name][1]
    host = ["--host", "127.0.0.1", "--port", str(port)]
    if how == "service":
        return [sys.executable, "-m", "service.cli", "serve", *host]
    kind, _, target = how.partition(":")
    if kind == "uvicorn":
        return [
            str(BIN / "uvicorn"),
            "--factory",
            target,
            "--no-access-log",
            "--log-level",
            "warning",
            *host,
        ]
    return [str(BIN / "bentoml"), "serve", target, *host]


def start(
    name: str,
    work: Path,
    pack_dir: Path,
    *,
    cpu: int | None = None,
    settings: dict[str, str] | None = None,
) -> Server:
    """Launch `name` (not waiting for it to be ready: see `wait_ready`);
    `settings` are extra `FLYWHEEL_*` variables for the full service."""
    port = free_port()
    env = {**server_env(name, work, pack_dir), **(settings or {})}
    Path(env["BENTOML_HOME"]).mkdir(parents=True, exist_ok=True)
    argv = command(name, port)
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    log_path = work / f"{name}.log"
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, f"http://127.0.0.1:{port}", process, log_path)


def wait_ready(server: Server, timeout_s: float = 120) -> None:
    service_process.wait_ready(server.url, server.process, server.log_path, timeout_s)


def stop(server: Server, timeout_s: float = 20) -> None:
    """SIGTERM, then SIGKILL the whole process tree (BentoML workers included)."""
    service_process.stop_service_process(server.process, timeout_s)
