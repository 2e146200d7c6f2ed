"""The drift worker the service schedules: one long-lived, niced child that
imports Evidently once, judges each window of new rows, and is replaced when
killed."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from monitoring.drift_schedule import DriftSchedule, DriftTarget
from monitoring.settings import MonitoringSettings
from packs.format import PackMetadata
from tests.monitoring.conftest import live_window
from tests.monitoring.test_monitoring_cli import log_dir_of, log_predictions

pytestmark = pytest.mark.integration


def test_one_worker_serves_every_run_and_a_killed_one_is_replaced(
    tmp_path: Path,
    default_pack: Path,
    reference: pd.DataFrame,
    pack_meta: PackMetadata,
) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    log_predictions(db, live_window(reference, 600, seed=3, shift=1.5), pack_meta)
    target = DriftTarget(db, tmp_path / "drift", tmp_path / "evidently", log_dir_of(db))
    mon = MonitoringSettings(
        drift_worker=True,
        drift_min_window_rows=100,
        drift_alpha=0.02,
        drift_timeout_s=600,
    )
    schedule = DriftSchedule(mon, target, lambda: default_pack)
    try:
        assert schedule.run_once() == 0
        first = schedule.last_result or {}
        assert first["dataset_drift"] is True and first["alpha"] == 0.02
        child = schedule._child
        assert child is not None
        assert os.getpriority(os.PRIO_PROCESS, child.pid) >= 10  # niced
        # Same worker, no new rows: skipped, not judged twice.
        assert schedule.run_once() == 0
        assert schedule._child is child
        assert (schedule.last_result or {})["skipped"] is True
        schedule.cancel_run()
        assert schedule.run_once() == 0
        assert schedule._child is not None and schedule._child.pid != child.pid
    finally:
        schedule.stop()
    assert child.poll() is not None
