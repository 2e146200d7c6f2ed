"""Retraining hooks: tell something outside the service that retraining is wanted.

A hook is either a command (run with the request as JSON on stdin, killed after a
timeout) or an HTTP POST of the same JSON to a configured URL. Both raise
`HookFailed` on any failure so the caller can count it; the retraining request
itself is already stored by then, so a failed hook loses nothing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

from monitoring.errors import MonitoringError


class HookFailed(MonitoringError):
    def __init__(self, kind: str, target: str, why: str):
        super().__init__(f"retraining {kind} hook {target!r} failed: {why}", kind=kind)
        self.kind = kind


def run_command_hook(
    command: Sequence[str], payload: dict[str, Any], *, timeout_s: float
) -> None:
    """Run `command` with `payload` as JSON on stdin; non-zero exit is a failure."""
    try:
        done = subprocess.run(
            list(command),
            input=json.dumps(payload, default=str),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HookFailed(
            "command", command[0], f"timed out after {timeout_s} s"
        ) from None
    except OSError as exc:
        raise HookFailed("command", command[0], str(exc)) from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-500:]
        raise HookFailed("command", command[0], f"exit {done.returncode}: {tail}")


def post_http_hook(url: str, payload: dict[str, Any], *, timeout_s: float) -> None:
    """POST `payload` as JSON to `url`; a non-2xx answer is a failure."""
    import httpx

    try:
        response = httpx.post(
            url, content=json.dumps(payload, default=str),
            headers={"content-type": "application/json"}, timeout=timeout_s,
        )  # fmt: skip
    except httpx.HTTPError as exc:
        raise HookFailed("http", url, f"{type(exc).__name__}: {exc}") from None
    if not response.is_success:
        raise HookFailed("http", url, f"HTTP {response.status_code}")
