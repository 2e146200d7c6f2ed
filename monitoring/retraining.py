"""The retraining trigger: when drift or bad-result reports say the model is stale.

Policy (pure logic, no I/O beyond the callbacks):
- drift: a window the detector calls drifted (any feature or output test below
  its Bonferroni threshold) extends a streak; a clean window resets it; a *skipped*
  window (too few rows) leaves it as it is, since it is evidence of nothing. The
  drift job's windows never share a row, so a streak of `consecutive_windows` is
  that many independent pieces of evidence; it opens a request and starts over.
- reports: more than `report_rate_per_1000` reports per 1,000 predictions, over at
  least `min_predictions_for_rate` predictions, opens a request.
- after a request opens, the same reason stays quiet for `cooldown_s`.

Opening a request means: `open_request(reason, details)` (the service passes a
function that writes a row in the store), the `retraining_requests_total` metric,
then the hook (a command or an HTTP POST). With `state` (a file, or a row in the
shared store) the streak and the cooldown survive restarts, which the cron
command (one process per run) needs, and move with the run from replica to
replica.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from common.json_state import JsonState
from monitoring.drift_metrics import DriftMetrics, NullDriftMetrics
from monitoring.hooks import HookFailed, post_http_hook, run_command_hook

if TYPE_CHECKING:
    from monitoring.drift import DriftResult

log = logging.getLogger(__name__)

OpenRequest = Callable[[str, dict[str, Any]], Any]


class RetrainPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    consecutive_windows: int = Field(default=3, ge=1)
    """Drifted windows in a row that open a retraining request."""
    report_rate_per_1000: float | None = Field(default=None, gt=0)
    """Reports per 1,000 predictions above which a request opens; None: off."""
    min_predictions_for_rate: int = Field(default=500, ge=1)
    """Fewest predictions over which a report rate is judged."""
    cooldown_s: float = Field(default=3600.0, ge=0)
    """After a request opens, the same reason opens no other for this long."""
    hook_timeout_s: float = Field(default=10.0, gt=0)
    """Longest a hook command or HTTP POST may take."""


@dataclass(frozen=True)
class RetrainDecision:
    reason: str
    details: dict[str, Any]
    hook_error: str | None = None


@dataclass
class _State:
    streak: int = 0
    last_opened: dict[str, float] = field(default_factory=dict)


class RetrainTrigger:
    """Decides when to retrain; thread-safe (the drift job and the API may call)."""

    def __init__(
        self,
        policy: RetrainPolicy,
        *,
        open_request: OpenRequest,
        hook_command: Sequence[str] | None = None,
        hook_url: str | None = None,
        metrics: DriftMetrics | NullDriftMetrics,
        state: JsonState | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.policy = policy
        self._open_request = open_request
        self._hook_command = list(hook_command) if hook_command else None
        self._hook_url = hook_url
        self._metrics = metrics
        self._store = state
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self._load()

    @property
    def streak(self) -> int:
        """Drifted windows in a row seen so far."""
        return self._state.streak

    def observe(self, result: DriftResult) -> RetrainDecision | None:
        """Feed one drift run; returns the decision when a request was opened."""
        if result.skipped or result.dataset_drift is None:
            return None
        with self._lock:
            self._refresh()
            if result.dataset_drift:
                self._state.streak += 1
            else:
                self._state.streak = 0
            streak = self._state.streak
            due = streak >= self.policy.consecutive_windows and self._cooled("drift")
            self._save()
        if not due:
            return None
        details = {
            "summary": result.summary(),
            "drifted": [
                {
                    "column": name,
                    "kind": c.kind,
                    "test": c.method,
                    "statistic": c.statistic,
                    "p_value": c.score,
                    "threshold": c.threshold,
                }
                for name, c in result.drifted
            ],
            "drifted_features": sorted(
                name for name, f in result.features.items() if f.drifted
            ),
            "alpha": result.alpha,
            "drift_share": result.drift_share,
            "consecutive_windows": streak,
            "distinct_rows": result.distinct_rows,
            "model_version": result.model_version,
            "window_rows": result.window_rows,
            "computed_at": result.computed_at.isoformat(),
            "snapshot_id": result.snapshot_id,
        }
        return self._open("drift", _finite(details))

    def observe_report_rate(
        self, *, reports: int, predictions: int, model_version: str | None = None
    ) -> RetrainDecision | None:
        """Feed report and prediction counts over the same recent period."""
        limit = self.policy.report_rate_per_1000
        if limit is None or predictions < self.policy.min_predictions_for_rate:
            return None
        rate = 1000.0 * reports / predictions
        if rate <= limit:
            return None
        with self._lock:
            self._refresh()
            if not self._cooled("report_rate"):
                return None
        details = {
            "reports": reports,
            "predictions": predictions,
            "reports_per_1000": rate,
            "report_rate_per_1000_threshold": limit,
            "model_version": model_version,
        }
        return self._open("report_rate", details)

    # ---- internals ------------------------------------------------------------

    def _cooled(self, reason: str) -> bool:
        last = self._state.last_opened.get(reason)
        return last is None or self._clock() - last >= self.policy.cooldown_s

    def _open(self, reason: str, details: dict[str, Any]) -> RetrainDecision:
        # The store row comes first: if it fails, nothing counts as opened and
        # the next window may try again.
        self._open_request(reason, details)
        with self._lock:
            self._state.last_opened[reason] = self._clock()
            if reason == "drift":
                self._state.streak = 0
            self._save()
        self._metrics.observe_retraining_request(reason)
        log.warning("retraining request opened (%s): %s", reason, details)
        payload = {"reason": reason, "details": details}
        error = None
        try:
            if self._hook_command:
                run_command_hook(
                    self._hook_command, payload, timeout_s=self.policy.hook_timeout_s
                )
            if self._hook_url:
                post_http_hook(
                    self._hook_url, payload, timeout_s=self.policy.hook_timeout_s
                )
        except HookFailed as exc:
            error = exc.message
            log.error("%s", exc.message)
            self._metrics.observe_hook_failure(exc.kind)
        return RetrainDecision(reason=reason, details=details, hook_error=error)

    def _refresh(self) -> None:
        """Read the saved state again: another replica's run may have moved it."""
        if self._store is not None:
            self._state = self._load()

    def _load(self) -> _State:
        raw = self._store.load() if self._store is not None else None
        if raw is None:
            return _State()
        try:
            return _State(
                streak=int(raw.get("streak", 0)),
                last_opened={str(k): float(v) for k, v in raw["last_opened"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring unreadable retraining-trigger state %r", raw)
            return _State()

    def _save(self) -> None:
        if self._store is not None:
            self._store.save(
                {"streak": self._state.streak, "last_opened": self._state.last_opened}
            )


def _finite(value: Any) -> Any:
    """NaN statistics (a test with no evidence) as None: JSON has no NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def jsonl_request_writer(path: Path) -> OpenRequest:
    """An `open_request` that appends one JSON line per request to `path`; for the
    cron command when the store offers no retraining-request table."""
    lock = threading.Lock()

    def open_request(reason: str, details: dict[str, Any]) -> None:
        line = json.dumps(
            {"opened_at": time.time(), "reason": reason, "details": details},
            default=str,
        )
        with lock:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    return open_request
