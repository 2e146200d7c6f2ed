"""The label-free accuracy estimate of one window of served answers, as the drift
job computes it every run (see `monitoring.accuracy` for the estimators)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from feedback.audit_accuracy import AuditAccuracy
from monitoring.accuracy import ACCURACY_ESTIMATORS, AccuracyEstimator


@dataclass(frozen=True)
class AccuracyReading:
    rows: int
    """Answered rows the estimate read."""
    estimates: dict[str, float]
    """{estimator: estimated accuracy}; NaN when the window was too small."""
    heldout_accuracy: float
    """The pack's accuracy on its held-out (validation) rows, for comparison."""
    audit: AuditAccuracy | None = None
    """Accuracy measured on the answered audit sample, when the store is read."""


class WindowAccuracy:
    """Reads a window of served probabilities and estimates its accuracy."""

    def __init__(
        self,
        read_probabilities: Callable[[int], tuple[np.ndarray, np.ndarray]],
        estimator: AccuracyEstimator,
        *,
        window_rows: int,
        min_window_rows: int,
        read_audit: Callable[[], AuditAccuracy] | None = None,
    ):
        self._read = read_probabilities
        self._read_audit = read_audit
        self.estimator = estimator
        self.window_rows = window_rows
        self.min_window_rows = min_window_rows

    def __call__(self) -> AccuracyReading:
        probabilities, answers = self._read(self.window_rows)
        n = len(probabilities)
        if n < self.min_window_rows:
            estimates = dict.fromkeys(ACCURACY_ESTIMATORS, float("nan"))
        else:
            estimates = self.estimator.estimate(probabilities, answers=answers)
        audit = self._read_audit() if self._read_audit is not None else None
        return AccuracyReading(n, estimates, self.estimator.heldout_accuracy, audit)


def window_accuracy_for_pack(
    pack_dir: Path,
    read_probabilities: Callable[[int], tuple[np.ndarray, np.ndarray]],
    *,
    window_rows: int,
    min_window_rows: int,
    read_audit: Callable[[], AuditAccuracy] | None = None,
) -> WindowAccuracy | None:
    """The estimate for a pack, fitted on its calibration set as served (with the
    pack's fitted temperature); None for a pack without a calibration set."""
    from packs.calibration import apply_temperature
    from packs.calibration_scores import read_calibration
    from packs.loader import read_metadata

    meta = read_metadata(pack_dir)
    calibration = read_calibration(pack_dir, meta.labels)
    if calibration is None or not len(calibration.labels):
        return None
    raw = calibration.probabilities
    served = raw / raw.sum(axis=1, keepdims=True)
    if meta.temperature.fitted:
        served = apply_temperature(served, meta.temperature.temperature)
    train = np.array([meta.training_priors[label] for label in meta.labels])
    estimator = AccuracyEstimator.fit(served, calibration.labels, train)
    return WindowAccuracy(
        read_probabilities,
        estimator,
        window_rows=window_rows,
        min_window_rows=min_window_rows,
        read_audit=read_audit,
    )
