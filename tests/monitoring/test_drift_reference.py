"""The drift reference: train + validation rows, stated in the pack's metadata,
and a warning when it is smaller than the drift window."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from monitoring.detector import DetectorConfig
from monitoring.drift_job import DriftJob
from monitoring.drift_metrics import NullDriftMetrics
from packs.build_default import penguin_frame
from packs.format import PackMetadata
from packs.writer import reference_size_warning


def test_the_default_reference_holds_train_and_validation_rows(
    reference: pd.DataFrame, pack_meta: PackMetadata
) -> None:
    info = pack_meta.reference
    assert info is not None
    assert info.splits == ["train", "validation"]
    assert info.rows == len(reference)
    assert info.distinct_rows == len(
        reference.drop_duplicates(subset=pack_meta.feature_names)
    )
    # The test split stays out: everything else of the 342 penguins is in.
    test_rows = pack_meta.metrics["test_rows"]
    assert info.rows == len(penguin_frame()) - test_rows


@pytest.mark.parametrize(
    ("distinct", "window", "warns"),
    [(4999, 5000, True), (5000, 5000, False), (273, 200, False), (273, 1000, True)],
)
def test_reference_size_warning_both_sides(
    distinct: int, window: int, warns: bool
) -> None:
    warning = reference_size_warning(distinct, window)
    assert (warning is not None) is warns
    if warning:
        assert f"{distinct} distinct rows" in warning and str(window) in warning


def test_the_drift_job_warns_once_about_a_small_reference(
    tmp_path, reference: pd.DataFrame, pack_meta: PackMetadata, caplog
) -> None:
    job = DriftJob(
        lambda rows: reference.head(0), reference, NullDriftMetrics(),
        window_rows=5000, min_window_rows=200, detector=DetectorConfig(0.05),
        out_dir=tmp_path, workspace_dir=None, model_version="v",
        feature_names=pack_meta.feature_names,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="monitoring.drift_job"):
        job.run_once()
        job.run_once()
    warnings = [r for r in caplog.records if "caps the drift tests" in r.message]
    assert len(warnings) == 1
