"""The drift benchmark the load-test benchmark calls: it runs and reports numbers."""

from __future__ import annotations

import pytest

from monitoring.bench_drift import bench, synthetic_rows

pytestmark = pytest.mark.integration


def test_bench_reports_seconds_and_peak_memory_of_one_drift_run() -> None:
    result = bench(2000, reference_rows=500)
    assert result["rows"] == 2000
    assert 0 < result["seconds"] < 30
    assert result["import_seconds"] > 0
    # Evidently alone is ~280 MiB once imported; anything less means no import.
    assert 150 < result["peak_mib"] < 2000
    assert result["drift_share"] == 0.5  # the synthetic window shifts 2 of 4


def test_synthetic_shift_moves_only_bill_and_flipper_length() -> None:
    base = synthetic_rows(5000, seed=1)
    moved = synthetic_rows(5000, seed=1, shift=1.0)
    delta = (moved.iloc[:, :4] - base.iloc[:, :4]).mean()
    assert delta["bill_length_mm"] > 2 and delta["flipper_length_mm"] > 5
    assert delta["bill_depth_mm"] == 0 and delta["body_mass_g"] == 0
