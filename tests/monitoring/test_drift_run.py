"""run_drift against the default pack's reference: drifted, clean and too-small
windows, and malformed input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import run_drift
from monitoring.errors import DriftInputInvalid
from packs.format import PackMetadata


def drift(window: pd.DataFrame, reference: pd.DataFrame, meta: PackMetadata, **kw):
    kw.setdefault("min_window_rows", 200)
    kw.setdefault("drift_share", 0.5)
    return run_drift(
        window, reference, feature_names=meta.feature_names,
        model_version=meta.version, **kw,
    )  # fmt: skip


def test_shifted_features_are_reported_as_dataset_drift(
    drifted_window: pd.DataFrame, reference: pd.DataFrame, pack_meta: PackMetadata
) -> None:
    result = drift(drifted_window, reference, pack_meta)
    assert not result.skipped
    assert result.dataset_drift is True
    assert result.drift_share == 0.5
    drifted = {name for name, f in result.features.items() if f.drifted}
    assert drifted == {"bill_length_mm", "flipper_length_mm"}
    # Small reference (< 1,000 rows): Evidently's K-S p-value per feature.
    assert all(f.method == "K-S p_value" for f in result.features.values())
    assert result.prediction_drift is not None and result.prediction_drift.drifted
    assert result.label_share_live["Gentoo"] > result.label_share_reference["Gentoo"]
    assert result.to_dict()["features"]["bill_length_mm"]["drifted"] is True


def test_a_sample_of_the_reference_is_not_drift(
    clean_window: pd.DataFrame, reference: pd.DataFrame, pack_meta: PackMetadata
) -> None:
    result = drift(clean_window, reference, pack_meta)
    assert result.dataset_drift is False
    assert result.drifted_columns == 0
    assert result.prediction_drift is not None and not result.prediction_drift.drifted
    shares = result.label_share_live
    assert shares.keys() == set(pack_meta.labels)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_too_small_a_window_is_skipped_with_a_reason_not_called_clean(
    clean_window: pd.DataFrame, reference: pd.DataFrame, pack_meta: PackMetadata
) -> None:
    result = drift(clean_window.head(50), reference, pack_meta)
    assert result.skipped
    assert result.dataset_drift is None and result.drift_share is None
    assert "50 rows" in (result.reason or "")
    assert "min_window_rows=200" in (result.reason or "")


def test_rows_logged_without_inputs_are_counted_not_compared(
    clean_window: pd.DataFrame, reference: pd.DataFrame, pack_meta: PackMetadata
) -> None:
    window = clean_window.head(300).copy()
    window.loc[150:, pack_meta.feature_names] = np.nan
    result = drift(window, reference, pack_meta)
    assert result.skipped
    assert result.rows_without_inputs == 150
    assert "150 more without inputs" in (result.reason or "")


def test_abstentions_are_left_out_of_the_label_shares(
    clean_window: pd.DataFrame, reference: pd.DataFrame, pack_meta: PackMetadata
) -> None:
    window = clean_window.copy()
    window.loc[: len(window) // 10 - 1, "predicted_label"] = None
    result = drift(window, reference, pack_meta)
    assert result.abstained_share == pytest.approx(0.1)
    assert sum(result.label_share_live.values()) == pytest.approx(1.0)


def test_reference_without_predictions_uses_its_true_labels(
    clean_window: pd.DataFrame, reference: pd.DataFrame, pack_meta: PackMetadata
) -> None:
    result = drift(clean_window, reference.drop(columns=["predicted_label"]), pack_meta)
    expected = reference["label"].value_counts(normalize=True)
    assert result.label_share_reference == pytest.approx(expected.to_dict())


def test_a_window_missing_a_feature_column_is_an_error_naming_it(
    clean_window: pd.DataFrame, reference: pd.DataFrame, pack_meta: PackMetadata
) -> None:
    with pytest.raises(DriftInputInvalid, match="body_mass_g"):
        drift(clean_window.drop(columns=["body_mass_g"]), reference, pack_meta)
