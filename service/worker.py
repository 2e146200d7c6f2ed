"""The parts one worker serves with, as wired by `service.wiring.build_worker`.

Routes reach them through `service.deps.worker_of(request)`; nothing else is
shared between requests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from feedback.db import SessionFactory
from feedback.promotion import Promoter
from service.access import Access
from service.dataplane import DataPlane
from service.served import ServedState
from service.settings import Settings
from service.shadow import ShadowRunner

log = logging.getLogger(__name__)


@dataclass
class Worker:
    settings: Settings
    served: ServedState
    dataplane: DataPlane
    promoter: Promoter
    access: Access
    sessions: SessionFactory
    shadow: ShadowRunner
    closers: list[Callable[[], object]] = field(default_factory=list)
    """Run in order by `close` (background jobs first, the log and metrics last)."""

    def close(self) -> None:
        for close in self.closers:
            try:
                close()
            except Exception:
                log.exception("closing %r failed", close)
