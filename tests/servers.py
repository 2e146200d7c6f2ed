"""Test defaults around `service.process`: an admin token and no scheduled drift runs.

Tests start the real service with these helpers; see `service/process.py`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from service import process
from service.process import (
    ROOT,
    ServiceProcess,
    free_port,
    stop_service_process,
    wait_ready,
)

__all__ = [
    "ADMIN_TOKEN",
    "ROOT",
    "ServiceProcess",
    "free_port",
    "running",
    "service_env",
    "start_service",
    "stop_service_process",
    "wait_ready",
]

ADMIN_TOKEN = "test-admin-token-0123456789"
# Several engineers' test servers start at once on a 2-core machine: start-up
# measured here took from 20 s up to past 90 s under that load.
READY_TIMEOUT_S = 300.0
TEST_DEFAULTS = {
    "FLYWHEEL_SECURITY__ADMIN_TOKEN": ADMIN_TOKEN,
    "FLYWHEEL_MONITORING__DRIFT_INTERVAL_S": "0",
}


def service_env(data_dir: Path, pack_dir: Path, **overrides: str) -> dict[str, str]:
    return process.service_env(data_dir, pack_dir, **{**TEST_DEFAULTS, **overrides})


def start_service(
    data_dir: Path,
    pack_dir: Path,
    *,
    port: int | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
    **overrides: str,
) -> ServiceProcess:
    return process.start_service(
        data_dir,
        pack_dir,
        port=port,
        ready_timeout_s=ready_timeout_s,
        **{**TEST_DEFAULTS, **overrides},
    )


def running(
    data_dir: Path,
    pack_dir: Path,
    *,
    ready_timeout_s: float = READY_TIMEOUT_S,
    **overrides: str,
) -> AbstractContextManager[ServiceProcess]:
    """A started service, stopped (and checked to stop cleanly) on exit."""
    return process.running(
        data_dir,
        pack_dir,
        port=None,
        ready_timeout_s=ready_timeout_s,
        **{**TEST_DEFAULTS, **overrides},
    )
