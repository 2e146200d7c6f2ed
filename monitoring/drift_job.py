"""The drift job: read the latest log window, compare, save, set gauges, trigger.

One `run_once` reads up to `window_rows` logged predictions through `read_window`,
keeps those newer than the last judged window (`judged_until`: consecutive windows
never share a row, so each run is fresh evidence), runs `drift.run_drift` against
the reference (a skipped window leaves its rows for the next run), saves the HTML
report under `out_dir` (keeping the newest `keep_html_reports`), adds the snapshot
to the Evidently workspace, sets the drift gauges, estimates the served accuracy
without labels (given `estimate_accuracy`, see `monitoring.accuracy_window`) and
feeds the retraining trigger. `start` runs it every `interval_s` on a daemon
thread, off the request path.

Run it in one process only (e.g. the first BentoML worker, or cron through
`python -m monitoring.cli drift`): every worker running it would repeat the work
and write one snapshot each. A thread shares its worker's GIL, and Evidently stays
resident (~300 MiB) after the first run; `python -m monitoring.cli drift --metrics`
spawned with the service's PROMETHEUS_MULTIPROC_DIR does the same run in its own
process and still sets the gauges the service's /metrics shows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from common.json_state import JsonState
from monitoring.detector import DetectorConfig
from monitoring.drift import (
    LABEL_COLUMN,
    PREDICTION_COLUMN,
    DriftResult,
    PredictProba,
    run_drift,
)
from monitoring.drift_metrics import DriftMetrics, NullDriftMetrics
from packs.writer import reference_size_warning

if TYPE_CHECKING:
    from monitoring.accuracy_window import AccuracyReading
    from monitoring.retraining import RetrainTrigger

log = logging.getLogger(__name__)

HTML_PREFIX = "drift-"


class DriftJob:
    """Periodic drift runs; `reference` and `model_version` may be callables so a
    promoted pack is picked up without rebuilding the job."""

    def __init__(
        self,
        read_window: Callable[[int], pd.DataFrame],
        reference: pd.DataFrame | Callable[[], pd.DataFrame],
        metrics: DriftMetrics | NullDriftMetrics,
        *,
        window_rows: int,
        min_window_rows: int,
        detector: DetectorConfig,
        out_dir: Path,
        workspace_dir: Path | None,
        model_version: str | Callable[[], str],
        trigger: RetrainTrigger | None = None,
        feature_names: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        project_name: str = "inference-service",
        keep_html_reports: int = 50,
        keep_snapshots: int = 1000,
        read_report_counts: Callable[[], tuple[int, int]] | None = None,
        model: Callable[[], PredictProba] | None = None,
        categorical_features: Sequence[str] = (),
        cursor: JsonState | None = None,
        estimate_accuracy: Callable[[], AccuracyReading] | None = None,
    ):
        """`model` returns the served model's `predict_proba` (its outputs are
        tested too); `cursor` keeps `judged_until` across processes (cron) and
        replicas (a row in the shared store)."""
        self._read_window = read_window
        self._reference = reference
        self._metrics = metrics
        self.window_rows = window_rows
        self.min_window_rows = min_window_rows
        if model is not None and not labels:
            raise ValueError("a job that tests the model's outputs needs its labels")
        self.detector = detector
        self._model = model
        self.categorical_features = list(categorical_features)
        self._cursor = cursor
        self.judged_until: datetime | None = self._load_cursor()
        self._reference_checked: int | None = None
        self.out_dir = Path(out_dir)
        self.workspace_dir = Path(workspace_dir) if workspace_dir else None
        self._model_version = model_version
        self._trigger = trigger
        self._feature_names = list(feature_names) if feature_names else None
        self._labels = list(labels) if labels else None
        self.project_name = project_name
        self.keep_html_reports = keep_html_reports
        self.keep_snapshots = keep_snapshots
        self._read_report_counts = read_report_counts
        self._estimate_accuracy = estimate_accuracy
        self.last_accuracy: AccuracyReading | None = None
        self._run_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_result: DriftResult | None = None
        self._last_features: list[str] = []

    def run_once(self) -> DriftResult:
        """One drift run; raises on failure (counted in `drift_runs_total`).

        The run counts as completed only after the retraining trigger has seen
        it: whoever waits on the completed count then also sees any request the
        run opened."""
        with self._run_lock:
            started = time.perf_counter()
            try:
                result = self._run()
            except Exception:
                self._metrics.observe_drift_failure()
                raise
            self.last_result = result
            reading = self._observe_accuracy()
            if reading is not None and not result.skipped:
                self._record_accuracy(result, reading)
            try:
                self._feed_trigger(result)
            finally:
                self._metrics.observe_drift(
                    result, seconds=time.perf_counter() - started
                )
        return result

    def _feed_trigger(self, result: DriftResult) -> None:
        if self._trigger is None:
            return
        self._trigger.observe(result)
        if self._read_report_counts is not None:
            reports, predictions = self._read_report_counts()
            self._trigger.observe_report_rate(
                reports=reports,
                predictions=predictions,
                model_version=result.model_version,
            )

    def _observe_accuracy(self) -> AccuracyReading | None:
        """The label-free accuracy estimate of the latest window, as gauges. It
        fails on its own: the drift run's result stands."""
        if self._estimate_accuracy is None:
            return None
        try:
            reading = self._estimate_accuracy()
        except Exception:
            log.exception("accuracy estimate failed")
            return None
        self.last_accuracy = reading
        self._metrics.observe_accuracy(reading)
        return reading

    def _record_accuracy(self, result: DriftResult, reading: AccuracyReading) -> None:
        """The reading as an accuracy snapshot, drawn over time next to drift."""
        if self.workspace_dir is None or result.model_version is None:
            return
        from monitoring.evidently_workspace import record_accuracy

        try:
            record_accuracy(
                self.workspace_dir,
                reading,
                project_name=self.project_name,
                model_version=result.model_version,
                computed_at=result.computed_at,
                features=self._last_features,
                labels=self._labels or sorted(result.label_share_reference),
                keep=self._keep_snapshots(),
            )
        except Exception:
            log.exception("recording the accuracy snapshot failed")

    def _keep_snapshots(self) -> int:
        """Snapshots kept: each judged window adds an accuracy one when estimated."""
        return self.keep_snapshots * (2 if self._estimate_accuracy is not None else 1)

    def _run(self) -> DriftResult:
        if self._cursor is not None:
            # Another replica's run may have judged windows since this one last ran.
            self.judged_until = self._load_cursor()
        reference = self._reference() if callable(self._reference) else self._reference
        version = (
            self._model_version()
            if callable(self._model_version)
            else self._model_version
        )
        features = self._feature_names or [
            c for c in reference.columns
            if c not in (LABEL_COLUMN, PREDICTION_COLUMN) and _is_numeric(reference[c])
        ]  # fmt: skip
        self._check_reference(reference, features)
        self._last_features = features
        window = self._unjudged(self._read_window(self.window_rows))
        result = run_drift(
            window,
            reference,
            feature_names=features,
            min_window_rows=self.min_window_rows,
            detector=self.detector,
            model_version=version,
            predict_proba=self._model() if self._model is not None else None,
            labels=self._labels,
            categorical_features=self.categorical_features,
            metadata={"project": self.project_name},
        )
        if result.skipped:
            log.info("drift run skipped: %s", result.reason)
            return result
        self._advance(result.window_end)
        html_path = self._save_html(result)
        snapshot_id = None
        if self.workspace_dir is not None:
            from monitoring.evidently_workspace import record_run

            labels = self._labels or sorted(result.label_share_reference)
            snapshot_id = record_run(
                self.workspace_dir,
                result,
                project_name=self.project_name,
                features=features,
                labels=labels,
                keep=self._keep_snapshots(),
            )
        log.info("drift run: %s", result.summary())
        return replace(result, html_path=str(html_path), snapshot_id=snapshot_id)

    def _check_reference(self, reference: pd.DataFrame, features: list[str]) -> None:
        """Warn (once per reference size) when the reference caps the tests."""
        distinct = len(reference.drop_duplicates(subset=features))
        if distinct == self._reference_checked:
            return
        self._reference_checked = distinct
        warning = reference_size_warning(distinct, self.window_rows)
        if warning:
            log.warning("%s", warning)

    def _unjudged(self, window: pd.DataFrame) -> pd.DataFrame:
        """The rows logged after the last judged window."""
        if self.judged_until is None or "created_at" not in window:
            return window
        until = pd.Timestamp(self.judged_until)
        return window[window["created_at"] > until]

    def _advance(self, window_end: datetime | None) -> None:
        if window_end is None:
            return
        self.judged_until = window_end
        if self._cursor is not None:
            self._cursor.save({"judged_until": window_end.isoformat()})

    def _load_cursor(self) -> datetime | None:
        raw = self._cursor.load() if self._cursor is not None else None
        if raw is None:
            return None
        try:
            return datetime.fromisoformat(raw["judged_until"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable drift cursor %r", raw)
            return None

    def _save_html(self, result: DriftResult) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stamp = result.computed_at.strftime("%Y%m%dT%H%M%S%fZ")
        safe_version = "".join(
            c if c.isalnum() or c in "-_." else "_" for c in result.model_version
        )
        path = self.out_dir / f"{HTML_PREFIX}{stamp}-{safe_version}.html"
        result.snapshot.save_html(str(path))
        # Each report is ~4 MB whatever the window size: keep a bounded number.
        reports = sorted(self.out_dir.glob(f"{HTML_PREFIX}*.html"))
        for old in reports[: max(0, len(reports) - self.keep_html_reports)]:
            old.unlink(missing_ok=True)
        return path

    # ---- scheduler ------------------------------------------------------------

    def start(self, interval_s: float, *, first_run_after_s: float | None = None):
        """Run every `interval_s` seconds on a daemon thread until `stop`.

        The first run waits `first_run_after_s` (default: one interval), so start-up
        never pays for Evidently's import.
        """
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        delay = interval_s if first_run_after_s is None else first_run_after_s
        self._thread = threading.Thread(
            target=self._loop, args=(interval_s, delay), name="drift-job", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the loop to end and wait for a run in progress (at most timeout_s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self, interval_s: float, delay_s: float) -> None:
        wait = delay_s
        while not self._stop.wait(wait):
            try:
                self.run_once()
            except Exception:
                # A failed run (database down, bad window) must not kill the
                # schedule: it is counted and logged, and the next one tries again.
                log.exception("drift run failed")
            wait = interval_s


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column)
