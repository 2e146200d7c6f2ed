"""DriftJob end to end on the default pack: HTML report, Evidently snapshot and
dashboard, gauges, and the retraining trigger; plus its background schedule."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from feedback.audit_accuracy import AuditAccuracy
from monitoring.accuracy_window import AccuracyReading
from monitoring.detector import DetectorConfig
from monitoring.drift_job import DriftJob
from monitoring.drift_metrics import DriftMetrics
from monitoring.evidently_workspace import (
    ACCURACY_TITLE,
    ALL_VERSIONS_TAB,
    dashboard_panels,
    open_project,
    open_workspace,
)
from monitoring.retraining import RetrainPolicy, RetrainTrigger
from packs.format import PackMetadata
from packs.loader import ModelPack

PANELS = {
    "Share of drifted features over time",
    "Drifted feature count",
    "Per-feature drift score",
    "Predicted-label share (live window)",
}


class Harness:
    """A job wired like the service wires it, with everything it produced."""

    def __init__(
        self,
        tmp: Path,
        reference: pd.DataFrame,
        meta: PackMetadata,
        model: ModelPack,
        *,
        alpha: float = 0.05,
        consecutive_windows: int = 1,
    ):
        self.window: pd.DataFrame = reference.head(0)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.registry = CollectorRegistry()
        self.metrics = DriftMetrics(
            self.registry, labels=meta.labels, features=meta.feature_names
        )
        self.trigger = RetrainTrigger(
            RetrainPolicy(consecutive_windows=consecutive_windows),
            open_request=lambda reason, details: self.requests.append(
                (reason, details)
            ),
            metrics=self.metrics,
        )
        self.out, self.workspace = tmp / "html", tmp / "evidently"
        self.meta = meta
        self.version = meta.version
        self.job = DriftJob(
            lambda rows: self.window.tail(rows), reference, self.metrics,
            window_rows=1000, min_window_rows=100, detector=DetectorConfig(alpha),
            model=lambda: model.predict_proba,
            out_dir=self.out, workspace_dir=self.workspace,
            model_version=lambda: self.version, trigger=self.trigger,
            feature_names=meta.feature_names, labels=meta.labels,
            project_name=meta.name, keep_html_reports=2, keep_snapshots=2,
        )  # fmt: skip

    def gauge(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def project(self) -> Any:
        return open_project(open_workspace(self.workspace), self.meta.name)

    def panels_by_tab(self) -> dict[str, list[str]]:
        model = self.project().dashboard.model()
        titles = {p.id: p.title for p in model.panels}
        return {t.title: [titles[p] for p in t.panels] for t in model.tabs}


@pytest.fixture
def harness(
    tmp_path: Path,
    reference: pd.DataFrame,
    pack_meta: PackMetadata,
    pack_model: ModelPack,
) -> Harness:
    return Harness(tmp_path, reference, pack_meta, pack_model)


def test_drifted_traffic_is_reported_everywhere_and_opens_a_request(
    harness: Harness, drifted_window: pd.DataFrame
) -> None:
    harness.window = drifted_window
    result = harness.job.run_once()

    assert result.dataset_drift is True
    assert harness.gauge("flywheel_drift_detected") == 1
    assert harness.gauge("flywheel_drift_share") == result.drift_share
    for name, relation in result.relations.items():
        p_value = harness.gauge("flywheel_drift_relation_p_value", feature=name)
        assert p_value == relation.score
        drifted = harness.gauge("flywheel_drift_relation_drifted", feature=name)
        assert drifted == float(relation.drifted)
    assert result.relations
    html = Path(result.html_path or "")
    assert html.is_file() and html.stat().st_size > 100_000
    project = harness.project()
    workspace = open_workspace(harness.workspace)
    assert [str(i) for i in workspace.list_runs(project.id)] == [result.snapshot_id]
    snapshot = workspace.get_run(project.id, result.snapshot_id)
    assert f"model_version={harness.version}" in snapshot.tags
    tabs = harness.panels_by_tab()
    assert set(tabs[ALL_VERSIONS_TAB]) >= PANELS
    assert set(tabs[f"Model {harness.version}"]) >= PANELS
    assert [reason for reason, _ in harness.requests] == ["drift"]
    assert "bill_length_mm" in harness.requests[0][1]["drifted_features"]
    assert harness.gauge("flywheel_retraining_requests_total", reason="drift") == 1


def test_a_run_counts_as_completed_only_after_its_request_is_open(
    harness: Harness, drifted_window: pd.DataFrame
) -> None:
    # Whoever waits on the completed count (the demo, a dashboard) must then
    # find the request the run opened.
    completed = {"outcome": "completed"}
    seen_when_opening: list[float | None] = []
    harness.trigger._open_request = lambda reason, details: seen_when_opening.append(
        harness.gauge("flywheel_drift_runs_total", **completed)
    )
    harness.window = drifted_window
    harness.job.run_once()
    assert seen_when_opening == [0.0]
    assert harness.gauge("flywheel_drift_runs_total", **completed) == 1


def test_undrifted_traffic_sets_the_gauge_to_zero_and_opens_nothing(
    harness: Harness, clean_window: pd.DataFrame
) -> None:
    harness.window = clean_window
    result = harness.job.run_once()
    assert result.dataset_drift is False
    assert harness.gauge("flywheel_drift_detected") == 0
    assert result.snapshot_id is not None
    assert harness.requests == []
    assert harness.gauge("flywheel_retraining_requests_total", reason="drift") == 0


def test_a_small_window_is_skipped_without_report_snapshot_or_request(
    harness: Harness, drifted_window: pd.DataFrame
) -> None:
    harness.window = drifted_window.head(20)
    result = harness.job.run_once()
    assert result.skipped and "20 rows" in (result.reason or "")
    assert result.html_path is None and result.snapshot_id is None
    assert not harness.out.exists() or not list(harness.out.iterdir())
    assert math.isnan(harness.gauge("flywheel_drift_detected") or 0.0)
    assert harness.gauge("flywheel_drift_runs_total", outcome="skipped") == 1
    assert harness.requests == []


def test_panels_are_created_once_and_a_new_version_gets_its_own_tab(
    harness: Harness, clean_window: pd.DataFrame
) -> None:
    harness.window = clean_window
    ids = [harness.job.run_once().snapshot_id]
    first = harness.panels_by_tab()
    ids.append(harness.job.run_once().snapshot_id)
    assert harness.panels_by_tab() == first
    harness.version = "candidate-2"
    ids.append(harness.job.run_once().snapshot_id)
    tabs = harness.panels_by_tab()
    assert set(tabs) == {*first, "Model candidate-2"}
    assert tabs[ALL_VERSIONS_TAB] == first[ALL_VERSIONS_TAB]
    # keep_html_reports=2: the oldest of three reports is gone.
    assert len(list(harness.out.glob("drift-*.html"))) == 2
    # keep_snapshots=2: so is the oldest snapshot, and the newest two stay.
    runs = open_workspace(harness.workspace).list_runs(harness.project().id)
    assert len(runs) == 2
    assert sorted(map(str, runs)) == sorted(map(str, ids[-2:]))


def test_the_schedule_survives_a_failed_run_and_stops_cleanly(
    harness: Harness, clean_window: pd.DataFrame
) -> None:
    calls = []

    def flaky_read(rows: int) -> pd.DataFrame:
        calls.append(rows)
        if len(calls) == 1:
            raise ConnectionError("database restarting")
        return clean_window.tail(rows)

    harness.job._read_window = flaky_read
    harness.job.start(interval_s=0.05, first_run_after_s=0)
    deadline = time.monotonic() + 60
    while harness.job.last_result is None and time.monotonic() < deadline:
        time.sleep(0.05)
    harness.job.stop()
    assert not harness.job.running
    assert harness.job.last_result is not None
    assert harness.gauge("flywheel_drift_runs_total", outcome="failed") == 1
    assert harness.gauge("flywheel_drift_runs_total", outcome="completed") >= 1


def stamped(window: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    """`window` as the prediction log returns it: one row per millisecond."""
    out = window.reset_index(drop=True).copy()
    out["created_at"] = start + pd.to_timedelta(range(len(out)), unit="ms")
    return out


def test_a_streak_counts_only_windows_of_rows_not_judged_before(
    tmp_path: Path,
    reference: pd.DataFrame,
    pack_meta: PackMetadata,
    pack_model: ModelPack,
    drifted_window: pd.DataFrame,
) -> None:
    h = Harness(tmp_path, reference, pack_meta, pack_model, consecutive_windows=3)
    start = pd.Timestamp("2026-12-01T00:00:00Z")
    batches = [
        stamped(
            drifted_window.iloc[i * 300 : (i + 1) * 300], start + pd.Timedelta(i, "h")
        )
        for i in range(3)
    ]
    h.window = batches[0]
    first = h.job.run_once()
    assert first.dataset_drift is True and first.window_rows == 300
    assert h.job.judged_until == batches[0]["created_at"].max()
    # The same rows read again are not new evidence: skipped, streak unchanged.
    again = h.job.run_once()
    assert again.skipped and again.window_rows == 0
    assert h.trigger.streak == 1 and h.requests == []
    h.window = pd.concat(batches[:2], ignore_index=True)
    second = h.job.run_once()
    assert second.window_rows == 300 and h.trigger.streak == 2
    assert h.requests == []
    h.window = pd.concat(batches, ignore_index=True)
    h.job.run_once()
    assert [reason for reason, _ in h.requests] == ["drift"]
    assert h.requests[0][1]["consecutive_windows"] == 3


def test_the_settings_alpha_reaches_the_verdict_on_both_sides(
    tmp_path: Path,
    reference: pd.DataFrame,
    pack_meta: PackMetadata,
    pack_model: ModelPack,
    clean_window: pd.DataFrame,
) -> None:
    from monitoring.drift import run_drift
    from monitoring.settings import MonitoringSettings

    window = clean_window.tail(1000).copy()  # the job reads 1,000 rows
    window["bill_depth_mm"] *= 1.04  # a mild fault: its p-value decides
    probe = run_drift(
        window, reference, feature_names=pack_meta.feature_names,
        min_window_rows=100, detector=DetectorConfig(0.5),
        model_version="v", predict_proba=pack_model.predict_proba,
        labels=pack_meta.labels, with_report=False,
    )  # fmt: skip
    every = [
        *probe.features.values(),
        *probe.relations.values(),
        *probe.outputs.values(),
    ]
    smallest = min(c.score for c in every)
    tests = len(every)
    assert 1e-6 < smallest * tests < 0.5
    verdicts = []
    for factor in (1.01, 0.99):
        alpha = smallest * tests * factor
        settings = MonitoringSettings(drift_alpha=alpha)
        h = Harness(tmp_path / str(factor), reference, pack_meta, pack_model,
                    alpha=settings.detector().alpha)  # fmt: skip
        h.window = window
        result = h.job.run_once()
        assert result.alpha == alpha
        verdicts.append(result.dataset_drift)
    assert verdicts == [True, False]


def _series(workspace: Path, project_id: Any, tags: list[str]) -> dict[str, list]:
    """The accuracy panel's lines as Evidently's UI reads them (legend -> values)."""
    from evidently.legacy.utils.sync import async_to_sync
    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.common import NoopAuthManager
    from evidently.ui.service.storage.local import create_local_project_manager
    from evidently.ui.service.type_aliases import ZERO_UUID

    (panel,) = [
        p for p in dashboard_panels(["f"], ["a"], tags) if p.title == ACCURACY_TITLE
    ]
    manager = create_local_project_manager(str(workspace), False, NoopAuthManager())
    filters = [
        SeriesFilter(
            tags=m.tags, metadata={}, metric=m.metric, metric_labels=m.metric_labels
        )
        for m in panel.values
    ]
    response = async_to_sync(
        manager.get_data_series(ZERO_UUID, project_id, filters, None, None)
    )
    legends = [m.legend for m in panel.values]
    return {legends[s.filter_index]: list(s.values) for s in response.series}


def test_each_judged_window_draws_estimated_and_audited_accuracy_over_time(
    harness: Harness, drifted_window: pd.DataFrame, clean_window: pd.DataFrame
) -> None:
    readings = iter([0.91, 0.87, 0.5])

    def estimate() -> AccuracyReading:
        audit = AuditAccuracy(answered=40, correct=34, low=0.71, high=0.93)
        return AccuracyReading(
            rows=300,
            estimates={"cbpe": next(readings), "atc": float("nan")},
            heldout_accuracy=0.95,
            audit=audit,
        )

    harness.job._estimate_accuracy = estimate
    harness.window = clean_window
    harness.job.run_once()
    harness.window = drifted_window
    harness.job.run_once()
    harness.window = drifted_window.head(10)  # too small: skipped, no new point
    assert harness.job.run_once().skipped

    project = harness.project()
    for tags in ([], [f"model_version={harness.version}"]):
        lines = _series(harness.workspace, project.id, tags)
        assert lines["estimated, no labels (CBPE)"] == [0.91, 0.87]
        assert lines["measured on the audit sample"] == [0.85, 0.85]
        assert lines["held-out rows of the pack"] == [0.95, 0.95]
        assert "estimated, no labels (ATC)" not in lines  # NaN is left out
    assert ACCURACY_TITLE in harness.panels_by_tab()[ALL_VERSIONS_TAB]
