"""Where a job keeps its small JSON state between runs (a cursor, a streak).

`JsonState` is what the job sees; `FileJsonState` keeps the state in a file (one
process per cron run, or a single replica); `feedback.job_state.SqlJsonState`
keeps it in the shared store, so that whichever replica runs the next window
continues from the state the last run left.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class JsonState(Protocol):
    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when nothing (readable) was saved."""

    def save(self, state: dict[str, Any]) -> None:
        """Replace the saved state (durably, before returning)."""


class FileJsonState:
    """The state in one JSON file, replaced atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            raw = json.loads(self.path.read_text())
        except ValueError:
            log.warning("ignoring unreadable state file %s", self.path)
            return None
        return raw if isinstance(raw, dict) else None

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.path)
