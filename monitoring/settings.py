"""Monitoring settings: the `monitoring` part of the service's one `Settings`
(`FLYWHEEL_MONITORING__*`), defined here so the drift schedule can take it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from monitoring.detector import DetectorConfig


class MonitoringSettings(BaseModel):
    drift_interval_s: float = Field(300.0, ge=0)
    """Seconds between scheduled drift runs inside the service; 0 turns them off."""
    drift_window_rows: int = Field(5000, ge=10)
    """Most logged predictions one drift run reads; only rows newer than the last
    judged window count, so consecutive windows never share a row."""
    drift_min_window_rows: int = Field(200, ge=1)
    """Fewest distinct new rows a window needs; below it the run is skipped (not
    "no drift") and the rows wait for the next run."""
    drift_alpha: float = Field(0.05, gt=0, lt=1)
    """Family-wise false-alarm rate of one drift window: each of the m tests (one
    per feature, per class probability, and the predicted label) rejects below
    drift_alpha / m (Bonferroni), so one drifted column is an alarm."""
    drift_numeric_test: Literal["ks"] = "ks"
    """Test for numeric features and class probabilities: two-sample K-S p-value,
    whatever the reference size."""
    drift_categorical_test: Literal["chisquare"] = "chisquare"
    """Test for categorical features and the predicted label: chi-square test of
    homogeneity p-value."""
    drift_categorical_features: list[str] = Field(default_factory=list)
    """Input features compared as categories rather than numbers."""
    drift_worker: bool = False
    """Run drift in one long-lived, niced worker process that imports Evidently
    once, instead of a new process (and import) per run."""
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

    @model_validator(mode="after")
    def _window_holds_the_minimum(self) -> MonitoringSettings:
        if self.drift_window_rows < self.drift_min_window_rows:
            raise ValueError(
                f"drift_window_rows={self.drift_window_rows} is below "
                f"drift_min_window_rows={self.drift_min_window_rows}: no window "
                "could ever be judged"
            )
        return self

    def detector(self) -> DetectorConfig:
        """The drift detector these settings pin."""
        return DetectorConfig(
            alpha=self.drift_alpha,
            numeric_test=self.drift_numeric_test,
            categorical_test=self.drift_categorical_test,
        )
