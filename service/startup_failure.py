"""Stop the whole BentoML server when a worker cannot start.

BentoML's arbiter restarts a worker whose start-up raises, forever, with the port
open: a container would never become ready and never exit. A worker that cannot
load what it must serve (a broken or missing pack, a bad policy) writes one line,
leaves a marker for the arbiter (its parent process), asks it to shut down, and
exits with status 2.

The arbiter shuts down cleanly on that SIGTERM, which alone would make
`bentoml serve` exit 0, as after a normal stop: an orchestrator would then read
the failed start as a finished job. `exit_nonzero_after_failed_start`, run in the
arbiter when it imports the service, turns the marker into exit status 2.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

log = logging.getLogger(__name__)

EXIT_FAILED_START = 2


def _marker(arbiter_pid: int) -> Path:
    return Path(tempfile.gettempdir()) / f"flywheel-start-failed-{arbiter_pid}"


def stop_server(message: str) -> NoReturn:
    """Write `message` once, stop the arbiter and leave without a traceback."""
    print(f"cannot start: {message}", file=sys.stderr, flush=True)
    parent = os.getppid()
    if parent > 1:
        with contextlib.suppress(OSError):
            _marker(parent).write_text(message)
        os.kill(parent, signal.SIGTERM)
    os._exit(EXIT_FAILED_START)


def exit_nonzero_after_failed_start() -> None:
    """At exit of this process, exit 2 if one of its workers failed to start."""
    pid = os.getpid()
    with contextlib.suppress(OSError):
        _marker(pid).unlink()  # left by an earlier process with this pid

    def check() -> None:
        marker = _marker(pid)
        if not marker.exists():
            return
        with contextlib.suppress(OSError):
            marker.unlink()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_FAILED_START)

    atexit.register(check)
