"""The drift benchmark the load-test benchmark calls: it runs the service's drift
job end to end on a store it fills, and reports numbers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

import feedback.log_window
from feedback.db import make_engine, session_factory
from feedback.models import Prediction
from monitoring.bench_drift import (
    ABSTAINED_SHARE,
    FEATURES,
    SPECIES,
    bench,
    fill_store,
    synthetic_rows,
)
from packs.format import REFERENCE_FILE
from packs.loader import load_table, read_metadata


@pytest.mark.integration
def test_bench_runs_the_drift_job_end_to_end_on_a_filled_store(
    default_pack: Path,
) -> None:
    result = bench(3000, pack=default_pack)
    assert result["rows"] == result["rows_read"] == 3000
    # The service's reference: the pack's reference table, whole.
    assert result["reference_rows"] == len(load_table(default_pack / REFERENCE_FILE))
    assert 0 < result["read_seconds"] < result["seconds"] < 30
    assert result["import_seconds"] > 0
    assert result["process_seconds"] > result["seconds"] + result["import_seconds"]
    assert result["setup_seconds"] > 0
    # Evidently alone is ~280 MiB once imported; anything less means no import.
    assert 150 < result["peak_mib"] < 2000
    # The window shifts 2 of 4 features: found, reported, saved and exported.
    assert result["drift_share"] == 0.5 and result["dataset_drift"] is True
    assert result["gauge_drift_share"] == 0.5
    assert result["html_kib"] > 0 and result["snapshot_id"]


def test_filled_store_holds_rows_as_the_prediction_log_writes_them(
    tmp_path: Path, default_pack: Path
) -> None:
    version = read_metadata(default_pack).version
    url = f"sqlite:///{tmp_path / 'flywheel.db'}"
    fill_store(url, 2000, model_version=version)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            by_time = select(Prediction).order_by(Prediction.created_at)
            rows = session.scalars(by_time).all()
            window = feedback.log_window.read_prediction_window(
                session, limit_rows=10_000, model_version=version
            )
    finally:
        engine.dispose()
    assert len(rows) == 2000 and len({r.id for r in rows}) == 2000
    stamps = [r.created_at for r in rows]
    assert stamps[0].tzinfo is not None and stamps[-1] - stamps[0] > timedelta(0)
    assert 0 < sum(r.abstained for r in rows) < 5 * ABSTAINED_SHARE * 2000
    for row in rows:
        assert len(row.id) == 32 and row.id[12] == "7"
        assert row.model_version == version
        assert row.inputs is not None and list(row.inputs) == FEATURES
        assert set(row.outputs) == {"label", "abstained", "reason", "probabilities"}
        probabilities = row.outputs["probabilities"]
        assert list(probabilities) == list(SPECIES)
        assert sum(probabilities.values()) == pytest.approx(1, abs=1e-5)
        assert row.label == row.outputs["label"]
        assert row.abstained == row.outputs["abstained"] == (row.label is None)
        if row.label is not None:
            assert max(probabilities, key=probabilities.get) == row.label
        # The log keeps a trace only where a guardrail acted (here: abstained).
        assert (row.trace is not None) == row.abstained
    # What the drift job reads: the shifted window, in logging order.
    assert list(window.columns) == [*FEATURES, "predicted_label", "created_at"]
    assert window["created_at"].is_monotonic_increasing
    assert (
        window["bill_length_mm"].mean()
        > synthetic_rows(2000, seed=1)["bill_length_mm"].mean()
    )


def test_window_read_in_chunks_equals_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'flywheel.db'}"
    fill_store(url, 1000, model_version="v1")  # 10 requests of 100 rows
    engine = make_engine(url)

    def read(limit_rows: int) -> pd.DataFrame:
        with session_factory(engine)() as session:
            return feedback.log_window.read_prediction_window(
                session, limit_rows=limit_rows, model_version="v1"
            )

    try:
        whole = read(1000)
        monkeypatch.setattr(feedback.log_window, "_WINDOW_CHUNK_ROWS", 7)
        chunked = read(1000)
        latest = read(300)
    finally:
        engine.dispose()
    pd.testing.assert_frame_equal(chunked, whole)
    pd.testing.assert_frame_equal(latest, whole.tail(300).reset_index(drop=True))
    assert len(whole) == 1000 and whole["created_at"].is_monotonic_increasing
    assert str(whole["created_at"].dt.tz) == "UTC"
    assert not np.isnan(whole[FEATURES].to_numpy()).any()


def test_synthetic_shift_moves_only_bill_and_flipper_length() -> None:
    base = synthetic_rows(5000, seed=1)
    moved = synthetic_rows(5000, seed=1, shift=1.0)
    delta = (moved.iloc[:, :4] - base.iloc[:, :4]).mean()
    assert delta["bill_length_mm"] > 2 and delta["flipper_length_mm"] > 5
    assert delta["bill_depth_mm"] == 0 and delta["body_mass_g"] == 0
