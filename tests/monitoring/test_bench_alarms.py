"""The alarm benchmark's parts: fresh no-shift rows that look like the data
without repeating it, the retraining-rate bound, and the table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.bench_alarms import SIZES, SmoothedBootstrap, render, upper_bound
from monitoring.settings import MonitoringSettings
from packs.build_default import penguin_frame

FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def test_fresh_rows_keep_each_class_and_the_recorded_resolution() -> None:
    frame = penguin_frame()
    generator = SmoothedBootstrap(frame, FEATURES)
    rng = np.random.default_rng(0)
    rows = generator.sample(20_000, rng, {"Gentoo": 1.0})
    gentoo = frame.loc[frame["label"] == "Gentoo", FEATURES].to_numpy()
    # Mean and spread of the class kept (within 2% and 10%).
    assert np.allclose(rows.mean(0), gentoo.mean(0), rtol=0.02)
    assert np.allclose(rows.std(0), gentoo.std(0), rtol=0.10)
    # Flipper length is recorded in whole mm, bill length in tenths.
    assert np.all(rows[:, 2] == np.round(rows[:, 2]))
    assert np.all(np.isclose(rows[:, 0] * 10, np.round(rows[:, 0] * 10)))
    assert rows.min() >= frame[FEATURES].to_numpy().min()
    # Fresh rows, not copies of the data's rows.
    seen = {tuple(r) for r in frame[FEATURES].to_numpy()}
    copies = sum(tuple(r) in seen for r in rows[:2000])
    assert copies < 100


def test_fresh_rows_keep_every_marginal_of_a_thirty_feature_class() -> None:
    # The K-S distance of each feature between fresh rows and the class's own
    # rows: 0.08 at most with the one-dimensional bandwidth, 0.14 with the
    # 30-dimensional one (which made the benchmark's "no shift" windows drift).
    from scipy.stats import ks_2samp
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    features = [f"x{j}" for j in range(bunch.data.shape[1])]
    frame = pd.DataFrame(bunch.data, columns=features)
    frame["label"] = np.where(bunch.target == 1, "benign", "malignant")
    rows = SmoothedBootstrap(frame, features).sample(
        5000, np.random.default_rng(1), {"benign": 1.0}
    )
    benign = frame.loc[frame["label"] == "benign", features].to_numpy()
    worst = max(ks_2samp(rows[:, j], benign[:, j]).statistic for j in range(30))
    assert worst < 0.11


def test_the_rate_bound_is_above_the_observed_rate() -> None:
    assert upper_bound(0, 50) == pytest.approx(1 - 0.05 ** (1 / 50), rel=1e-6)
    assert 0.02 < upper_bound(1, 50) < 0.1
    assert upper_bound(50, 50) == 1.0


def test_the_table_shows_rates_skips_and_the_request_bound() -> None:
    table = [
        {"dataset": "d", "case": "no shift", "rates": dict.fromkeys(SIZES, 0.0)},
        {"dataset": "d", "case": "stuck", "rates": {200: None, 1000: 1.0, 5000: 1.0}},
    ]
    text = render(table, windows=50, settings=MonitoringSettings(), seconds=1.0)
    assert "| d | no shift | 0% | 0% | 0% |" in text
    assert "| d | stuck | skipped | 100% | 100% |" in text
    assert "- d: p = 0.0%, p_hi = 5.8%, <= 0.2 per 1,000 runs" in text
