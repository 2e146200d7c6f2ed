"""Label-free accuracy estimates: the estimators on calibrated synthetic data,
the window reading, the gauges, the drift job's hook and the evaluation command."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from feedback.audit_accuracy import AuditAccuracy
from guardrails.heldout_data import label_shift_sample
from monitoring.accuracy import ACCURACY_ESTIMATORS, AccuracyEstimator
from monitoring.accuracy_window import (
    AccuracyReading,
    WindowAccuracy,
    window_accuracy_for_pack,
)
from monitoring.detector import DetectorConfig
from monitoring.drift_job import DriftJob
from monitoring.drift_metrics import DriftMetrics

TRAIN = np.array([0.5, 0.3, 0.2])


def _calibrated(n: int, priors: np.ndarray, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """Rows whose probabilities are the exact posterior under TRAIN."""
    k = len(priors)
    y = rng.choice(k, size=n, p=priors)
    centres = np.eye(k) * 1.2
    x = centres[y] + rng.normal(size=(n, k))
    logits = x @ centres.T - 0.5 * (centres**2).sum(axis=1) + np.log(TRAIN)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True), y


def test_cbpe_follows_the_accuracy_under_label_shift_and_beats_no_adjustment() -> None:
    rng = np.random.default_rng(0)
    val_p, val_y = _calibrated(2000, TRAIN, rng)
    estimator = AccuracyEstimator.fit(val_p, val_y, TRAIN)
    adjusted, plain = [], []
    for _ in range(30):
        priors = rng.dirichlet(np.full(3, 0.3))
        p, y = _calibrated(1000, priors, rng)
        realised = (p.argmax(axis=1) == y).mean()
        adjusted.append(abs(estimator.estimate(p)["cbpe"] - realised))
        plain.append(abs(estimator.estimate(p, adjust_priors=False)["cbpe"] - realised))
    assert np.mean(adjusted) * 100 <= 1.5
    assert np.mean(adjusted) < np.mean(plain)


def test_atc_reads_the_heldout_accuracy_back_on_the_heldout_rows() -> None:
    rng = np.random.default_rng(1)
    p, y = _calibrated(1000, TRAIN, rng)
    estimator = AccuracyEstimator.fit(p, y, TRAIN)
    got = estimator.estimate(p, adjust_priors=False)["atc"]
    assert got == pytest.approx(estimator.heldout_accuracy, abs=0.002)


def test_the_served_answer_is_judged_not_the_argmax() -> None:
    p = np.array([[0.7, 0.2, 0.1]] * 10)
    estimator = AccuracyEstimator(TRAIN, 1.0, 0.5, 0.9)
    top = estimator.estimate(p, adjust_priors=False)
    other = estimator.estimate(p, answers=np.full(10, 1), adjust_priors=False)
    assert top["cbpe"] == pytest.approx(0.7) and other["cbpe"] == pytest.approx(0.2)
    assert top["atc"] == 1.0 and other["atc"] == 0.0


def test_an_empty_or_small_window_estimates_nothing() -> None:
    estimator = AccuracyEstimator(TRAIN, 1.0, 0.5, 0.9)
    assert all(math.isnan(v) for v in estimator.estimate(np.empty((0, 3))).values())
    window = WindowAccuracy(
        lambda rows: (np.full((5, 3), 1 / 3), np.zeros(5, dtype=np.intp)),
        estimator,
        window_rows=1000,
        min_window_rows=200,
    )
    reading = window()
    assert reading.rows == 5 and all(math.isnan(v) for v in reading.estimates.values())


def test_the_default_pack_gets_an_estimator_from_its_calibration_set(
    default_pack: Path,
) -> None:
    rng = np.random.default_rng(2)
    window = window_accuracy_for_pack(
        default_pack,
        lambda rows: (rng.dirichlet([5, 1, 1], rows), np.zeros(rows, np.intp)),
        window_rows=300,
        min_window_rows=200,
    )
    assert window is not None
    assert window.estimator.heldout_accuracy > 0.9
    reading = window()
    assert reading.rows == 300 and set(reading.estimates) == set(ACCURACY_ESTIMATORS)


def test_the_drift_job_exports_the_estimate_even_when_drift_is_skipped(
    tmp_path: Path,
    reference: pd.DataFrame,
    pack_meta,  # type: ignore[no-untyped-def]
) -> None:
    registry = CollectorRegistry()
    metrics = DriftMetrics(
        registry, labels=pack_meta.labels, features=pack_meta.feature_names
    )
    audit = AuditAccuracy(answered=50, correct=45, low=0.79, high=0.96)
    reading = AccuracyReading(500, {"cbpe": 0.91, "atc": 0.88}, 0.97, audit)
    job = DriftJob(
        lambda rows: reference.head(0), reference, metrics,
        window_rows=1000, min_window_rows=200, detector=DetectorConfig(alpha=0.05),
        out_dir=tmp_path, workspace_dir=None, model_version="v1",
        estimate_accuracy=lambda: reading,
    )  # fmt: skip
    assert job.run_once().skipped
    assert job.last_accuracy is reading
    value = registry.get_sample_value
    assert value("flywheel_estimated_accuracy", {"estimator": "cbpe"}) == 0.91
    assert value("flywheel_estimated_accuracy", {"estimator": "atc"}) == 0.88
    assert value("flywheel_heldout_accuracy") == 0.97
    assert value("flywheel_estimated_accuracy_window_rows") == 500
    assert value("flywheel_audit_accuracy", {"bound": "estimate"}) == 0.9
    assert value("flywheel_audit_accuracy", {"bound": "low"}) == 0.79
    assert value("flywheel_audit_answered_rows") == 50


def test_a_failing_estimate_leaves_the_drift_run_standing(
    tmp_path: Path,
    reference: pd.DataFrame,
    pack_meta,  # type: ignore[no-untyped-def]
) -> None:
    def broken() -> AccuracyReading:
        raise RuntimeError("database gone")

    job = DriftJob(
        lambda rows: reference.head(0), reference,
        DriftMetrics(labels=pack_meta.labels, features=pack_meta.feature_names),
        window_rows=1000, min_window_rows=200, detector=DetectorConfig(alpha=0.05),
        out_dir=tmp_path, workspace_dir=None, model_version="v1",
        estimate_accuracy=broken,
    )  # fmt: skip
    assert job.run_once().skipped and job.last_accuracy is None


def test_label_shift_windows_keep_their_size() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    assert len(label_shift_sample(y, np.array([0.9, 0.1, 0.0]), 1000, rng)) == 1000


def test_evaluation_command_prints_the_table_and_refuses_bad_input() -> None:
    run = [sys.executable, "-m", "monitoring.accuracy_evaluation"]
    done = subprocess.run(
        [*run, "--datasets", "iris", "--windows", "5"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "| iris | dirichlet(0.1) |" in done.stdout
    assert "| **all datasets** | none |" in done.stdout
    bad = subprocess.run(
        [*run, "--datasets", "mnist"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "unknown datasets ['mnist']" in bad.stderr
