"""Stop the whole BentoML server when a worker cannot start.

BentoML's arbiter restarts a worker whose start-up raises, forever, with the port
open: a container would never become ready and never exit. A worker that cannot
load what it must serve (a broken or missing pack, a bad policy) writes one line,
asks the arbiter (its parent process) to shut down, and exits with status 2.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import NoReturn

log = logging.getLogger(__name__)


def stop_server(message: str) -> NoReturn:
    """Write `message` once, stop the arbiter and leave without a traceback."""
    print(f"cannot start: {message}", file=sys.stderr, flush=True)
    parent = os.getppid()
    if parent > 1:
        os.kill(parent, signal.SIGTERM)
    os._exit(2)
