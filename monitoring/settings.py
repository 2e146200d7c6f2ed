"""Monitoring settings: the `monitoring` part of the service's one `Settings`
(`FLYWHEEL_MONITORING__*`), defined here so the drift schedule can take it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MonitoringSettings(BaseModel):
    drift_interval_s: float = Field(300.0, ge=0)
    """Seconds between scheduled drift runs inside the service; 0 turns them off."""
    drift_window_rows: int = Field(5000, ge=10)
    """Latest logged predictions compared with the reference."""
    drift_min_window_rows: int = Field(200, ge=1)
    """Below this many rows a drift run is skipped, not reported as "no drift"."""
    drift_share: float = Field(0.5, gt=0, le=1)
    """Share of drifted columns that makes the dataset drifted."""
    drift_timeout_s: float = Field(300.0, gt=0)
    """Longest one drift run may take before it is killed."""
    retrain_consecutive_windows: int = Field(3, ge=1)
    """Drifted windows in a row that open a retraining request."""
    retrain_report_rate_per_1000: float | None = Field(None, gt=0)
    """Reports per 1,000 predictions (last hour) that open a request; None: off."""
    retrain_cooldown_s: float = Field(3600.0, ge=0)
    """After a request opens, the same reason opens no other for this long."""
    retrain_hook_command: str | None = None
    """Command run when retraining is requested (e.g. a CI trigger script)."""
    retrain_hook_url: str | None = None
    """URL that receives an HTTP POST when retraining is requested."""
