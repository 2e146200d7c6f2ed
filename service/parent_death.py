"""Make a worker process die with the process that started it (Linux).

BentoML's workers run in process groups of their own, so killing the server's
group (or the arbiter alone, with SIGKILL) leaves them re-parented to PID 1,
still holding the port; the next start then fails with "Address already in use".
`PR_SET_PDEATHSIG` asks the kernel to send the worker SIGTERM (a graceful drain,
as on a normal stop) the moment its parent dies.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Arrange for `sig` when the parent dies; False where the OS cannot."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return False
    if parent == 1 or os.getppid() != parent:
        # The parent died before the request took effect: nobody will signal us.
        os.kill(os.getpid(), sig)
    return True
