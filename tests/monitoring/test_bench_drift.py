"""The drift benchmark the load-test benchmark calls: it runs the service's drift
job end to end on a store it fills, and reports numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import feedback.log_window
from feedback.log_reader import PredictionLogReader
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


def test_filled_log_holds_rows_as_the_prediction_log_writes_them(
    tmp_path: Path, default_pack: Path
) -> None:
    version = read_metadata(default_pack).version
    url = f"sqlite:///{tmp_path / 'flywheel.db'}"
    log_dir = tmp_path / "prediction-log"
    fill_store(url, log_dir, 2000, model_version=version)
    reader = PredictionLogReader(log_dir)
    table = reader.rows_since(datetime(2000, 1, 1, tzinfo=UTC))
    window = feedback.log_window.read_prediction_window(
        reader, limit_rows=10_000, model_version=version
    )
    ids = table["id"].to_pylist()
    assert len(ids) == 2000 and len(set(ids)) == 2000
    rows = [reader.get(pid) for pid in ids[::97]]
    stamps = table["created_at"].to_pylist()
    assert stamps[0].tzinfo is not None and stamps[-1] - stamps[0] > timedelta(0)
    abstained = table["abstained"].to_pylist()
    assert 0 < sum(abstained) < 5 * ABSTAINED_SHARE * 2000
    for row in rows:
        assert row is not None
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
    traces = table["trace"].to_pylist()
    assert [t is not None for t in traces] == abstained
    # What the drift job reads: the shifted window, in logging order.
    assert list(window.columns) == [*FEATURES, "predicted_label", "created_at"]
    assert window["created_at"].is_monotonic_increasing
    assert (
        window["bill_length_mm"].mean()
        > synthetic_rows(2000, seed=1)["bill_length_mm"].mean()
    )


def test_latest_window_is_the_tail_of_the_whole_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flywheel.db'}"
    log_dir = tmp_path / "prediction-log"
    fill_store(url, log_dir, 1000, model_version="v1")  # 10 requests of 100 rows
    reader = PredictionLogReader(log_dir)

    def read(limit_rows: int) -> pd.DataFrame:
        return feedback.log_window.read_prediction_window(
            reader, limit_rows=limit_rows, model_version="v1"
        )

    whole = read(1000)
    latest = read(300)
    pd.testing.assert_frame_equal(latest, whole.tail(300).reset_index(drop=True))
    assert len(whole) == 1000 and whole["created_at"].is_monotonic_increasing
    assert str(whole["created_at"].dt.tz) == "UTC"
    assert not np.isnan(whole[FEATURES].to_numpy()).any()
    assert len(read(5000)) == 1000


def test_synthetic_shift_moves_only_bill_and_flipper_length() -> None:
    base = synthetic_rows(5000, seed=1)
    moved = synthetic_rows(5000, seed=1, shift=1.0)
    delta = (moved.iloc[:, :4] - base.iloc[:, :4]).mean()
    assert delta["bill_length_mm"] > 2 and delta["flipper_length_mm"] > 5
    assert delta["bill_depth_mm"] == 0 and delta["body_mass_g"] == 0
