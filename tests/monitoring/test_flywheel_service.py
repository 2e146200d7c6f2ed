"""Drift in the running service: scheduled drift runs set the gauges, write
snapshots and open a retraining request only for drifted traffic; the demo loop
ends with a retrained model passing the gate and being served."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitoring.traffic import instances, like_training
from service.demo import (
    DEMO_SETTINGS,
    completed_drift_runs,
    metric,
    run_demo,
    send,
    wait_for_drift_runs,
)
from service.settings import Settings
from tests.servers import running

pytestmark = pytest.mark.integration


def test_undrifted_traffic_opens_no_retraining_request(
    tmp_path: Path, default_pack: Path
) -> None:
    with (
        running(tmp_path / "data", default_pack, **DEMO_SETTINGS) as svc,
        svc.client() as c,
    ):
        before = completed_drift_runs(c)
        send(c, instances(like_training(300, seed=5)), batch=300)
        text = wait_for_drift_runs(c, 1, since=before)
        assert metric(text, "flywheel_drift_detected") == 0.0
        assert metric(text, "flywheel_drift_window_rows") == 300.0
        assert (
            c.get("/admin/retraining-requests", headers=svc.admin_headers()).json()
            == []
        )
    assert list((tmp_path / "data" / "drift").glob("drift-*.html"))
    assert list((tmp_path / "data" / "evidently").rglob("*"))


def test_demo_drift_to_promotion_end_to_end(tmp_path: Path, default_pack: Path) -> None:
    settings = Settings(data_dir=tmp_path, pack_dir=default_pack)
    summary = run_demo(settings, echo=lambda _line: None)
    assert summary["calm_drift_detected"] == 0.0
    assert summary["drift_detected"] == 1.0
    # Two drifted windows are required: none after the first, one after the second.
    assert summary["requests_after_one_drifted_window"] == 0
    assert summary["retraining_requests"] == 1
    assert summary["snapshots"] > 0
    assert summary["reported_label"] == "Chinstrap"
    assert summary["fixed_label"] == "Adelie"
    assert summary["promoted_version"] != default_pack.name
    assert summary["drifted_features"]  # the summary names them
    report = json.loads(Path(summary["regression_report"]).read_text())
    assert report["model_version"] == summary["promoted_version"]
