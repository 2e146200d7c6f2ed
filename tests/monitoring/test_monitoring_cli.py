"""The monitoring commands as users run them: `drift` for cron over a real SQLite
store, and `ui` serving Evidently with dashboard panels that hold data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from packs.format import PackMetadata
from tests.feedback.helpers import submit_records
from tests.monitoring.conftest import live_window
from tests.servers import ROOT, free_port

pytestmark = pytest.mark.integration


def log_predictions(db_url: str, window: pd.DataFrame, meta: PackMetadata) -> None:
    """A fresh store, and `window` written into the prediction log beside it (its
    directory: `log_dir_of(db_url)`) the way the service's prediction log does."""
    from feedback.db import make_engine, migrate
    from feedback.prediction_log import PredictionLog
    from tests.feedback.helpers import id_at

    engine = make_engine(db_url)
    migrate(engine)
    engine.dispose()
    log = PredictionLog(log_dir_of(db_url)).start()
    now = datetime.now(UTC)
    records = [
        {
            "id": id_at(now),
            "created_at": now,
            "model_version": meta.version,
            "inputs": {f: float(row[f]) for f in meta.feature_names},
            "outputs": {"label": row["predicted_label"], "abstained": False},
        }
        for _, row in window.iterrows()
    ]
    assert submit_records(log, records)
    assert log.close(timeout_s=30)


def log_dir_of(db_url: str) -> Path:
    return Path(db_url.removeprefix("sqlite:///")).parent / "prediction-log"


def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitoring.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip


def test_drift_command_reads_the_log_and_records_everything(
    tmp_path: Path,
    default_pack: Path,
    reference: pd.DataFrame,
    pack_meta: PackMetadata,
) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    log_predictions(db, live_window(reference, 600, seed=3, shift=1.5), pack_meta)
    out, workspace = tmp_path / "drift", tmp_path / "evidently"
    multiproc = tmp_path / "prometheus_multiproc"
    multiproc.mkdir()

    done = run_cli(
        "drift", "--db", db, "--log-dir", str(log_dir_of(db)),
        "--pack", str(default_pack), "--out", str(out),
        "--workspace", str(workspace), "--consecutive-windows", "1",
        "--min-window-rows", "100", "--alpha", "0.01",
        "--fail-on-drift", "--metrics",
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)},
    )  # fmt: skip

    assert done.returncode == 3, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["dataset_drift"] is True and result["window_rows"] == 600
    # The non-default alpha reached the verdict: 12 tests (4 features, 4
    # relations, 3 probabilities, the label) at 0.01 / 12 each.
    assert result["alpha"] == 0.01
    assert result["per_test_alpha"] == pytest.approx(0.01 / 12)
    assert set(result["outputs"]) >= {"proba_Gentoo", "predicted_label"}
    assert "bill_length_mm" in result["summary"]
    assert Path(result["html_path"]).is_file()
    # Rows logged without probabilities are not judged: no estimate, not a 0.
    accuracy = result["estimated_accuracy"]
    assert accuracy["rows"] == 0 and accuracy["cbpe"] is None
    assert accuracy["heldout_accuracy"] > 0.9
    assert list(workspace.glob(f"*/snapshots/{result['snapshot_id']}.json"))
    assert [(r.reason, r.model_version) for r in open_requests(db)] == [
        ("drift", pack_meta.version)
    ]
    # The gauges outlive the command in the multiprocess files the service reads.
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(multiproc))
    assert registry.get_sample_value("flywheel_drift_detected") == 1
    reason = {"reason": "drift"}
    assert registry.get_sample_value("flywheel_retraining_requests_total", reason) == 1
    feature = {"feature": "bill_length_mm"}
    assert registry.get_sample_value("flywheel_drift_feature_drifted", feature) == 1

    # The next run finds no row it has not judged yet: skipped, no second request.
    again = run_cli(
        "drift", "--db", db, "--log-dir", str(log_dir_of(db)),
        "--pack", str(default_pack), "--out", str(out),
        "--workspace", str(workspace), "--consecutive-windows", "1",
        "--min-window-rows", "100",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout)
    assert second["skipped"] is True and second["window_rows"] == 0
    assert len(open_requests(db)) == 1


def open_requests(db_url: str) -> list[Any]:
    from feedback.db import make_engine, session_factory
    from feedback.store import retraining_requests

    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as session:
            return retraining_requests(session)
    finally:
        engine.dispose()


def test_drift_command_skips_an_empty_log(
    tmp_path: Path, default_pack: Path, pack_meta: PackMetadata
) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    log_predictions(db, pd.DataFrame(columns=["predicted_label"]), pack_meta)
    done = run_cli(
        "drift", "--db", db, "--log-dir", str(log_dir_of(db)),
        "--pack", str(default_pack), "--out", str(tmp_path / "out"),
        "--workspace", str(tmp_path / "ws"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["skipped"] is True and "0 rows" in result["reason"]


def _wait_json(url: str, process: subprocess.Popen[Any], timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "evidently ui exited early"
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


def test_ui_command_serves_dashboard_panels_with_data(
    tmp_path: Path,
    reference: pd.DataFrame,
    pack_meta: PackMetadata,
    drifted_window: pd.DataFrame,
) -> None:
    from feedback.audit_accuracy import AuditAccuracy
    from monitoring.accuracy_window import AccuracyReading
    from monitoring.detector import DetectorConfig
    from monitoring.drift_job import DriftJob
    from monitoring.drift_metrics import NullDriftMetrics

    workspace = tmp_path / "evidently"
    DriftJob(
        lambda rows: drifted_window.tail(rows), reference, NullDriftMetrics(),
        window_rows=1000, min_window_rows=100, detector=DetectorConfig(alpha=0.05),
        out_dir=tmp_path / "html", workspace_dir=workspace,
        model_version=pack_meta.version, feature_names=pack_meta.feature_names,
        labels=pack_meta.labels, project_name=pack_meta.name,
        estimate_accuracy=lambda: AccuracyReading(
            rows=1000, estimates={"cbpe": 0.93, "atc": 0.92}, heldout_accuracy=0.95,
            audit=AuditAccuracy(answered=50, correct=46, low=0.81, high=0.97),
        ),
    ).run_once()  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "monitoring.cli", "ui", "--workspace",
         str(workspace), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        projects = _wait_json(f"{base}/api/projects", process)
        assert [p["name"] for p in projects] == [pack_meta.name]
        project_id = projects[0]["id"]
        board = httpx.get(f"{base}/api/v2/dashboards/{project_id}").json()
        assert len(board["panels"]) >= 14
        for panel in board["panels"]:
            filters = [
                {k: v[k] for k in ("tags", "metadata", "metric", "metric_labels")}
                for v in panel["values"]
            ]
            series = httpx.post(
                f"{base}/api/v2/snapshots/{project_id}/data_series_batch",
                json={"series_filter": filters},
            ).json()["series"]
            assert series and all(s["values"] for s in series), panel["title"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
