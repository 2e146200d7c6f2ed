"""run_drift against the default pack's reference: drifted, clean, stuck and
too-small windows, repeated rows, Evidently's configuration, malformed input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.detector import DetectorConfig
from monitoring.drift import run_drift
from monitoring.errors import DriftInputInvalid
from packs.format import PackMetadata
from packs.loader import ModelPack


def drift(
    window: pd.DataFrame,
    reference: pd.DataFrame,
    meta: PackMetadata,
    model: ModelPack | None = None,
    **kw,
):
    kw.setdefault("min_window_rows", 200)
    kw.setdefault("detector", DetectorConfig(alpha=0.05))
    kw.setdefault("with_report", False)
    return run_drift(
        window, reference, feature_names=meta.feature_names,
        model_version=meta.version, labels=meta.labels,
        predict_proba=model.predict_proba if model else None, **kw,
    )  # fmt: skip


def test_shifted_features_are_drift_naming_features_and_outputs(
    drifted_window: pd.DataFrame,
    reference: pd.DataFrame,
    pack_meta: PackMetadata,
    pack_model: ModelPack,
) -> None:
    result = drift(drifted_window, reference, pack_meta, pack_model)
    assert not result.skipped and result.dataset_drift is True
    drifted = {name for name, f in result.features.items() if f.drifted}
    assert drifted == {"bill_length_mm", "flipper_length_mm"}
    assert result.drift_share == 0.5
    # The statistic is the K-S test whatever the reference size.
    assert all(f.method == "ks" for f in result.features.values())
    # 4 features, 4 relations (each feature given the other three), 3 class
    # probabilities and the predicted label, Bonferroni over the 12 tests.
    assert set(result.relations) == set(pack_meta.feature_names)
    assert all(r.method == "ks" for r in result.relations.values())
    assert set(result.outputs) == {
        "proba_Adelie", "proba_Chinstrap", "proba_Gentoo", "predicted_label"
    }  # fmt: skip
    assert result.per_test_alpha == pytest.approx(0.05 / 12)
    assert result.outputs["predicted_label"].method == "chisquare"
    assert result.prediction_drift is result.outputs["predicted_label"]
    summary = result.summary()
    assert "flipper_length_mm (feature, ks statistic" in summary
    assert "p=" in summary and "< 0.0042" in summary
    as_dict = result.to_dict()
    assert as_dict["features"]["bill_length_mm"]["drifted"] is True
    assert as_dict["summary"] == summary


def test_one_stuck_feature_is_drift_on_its_own(
    clean_window: pd.DataFrame,
    reference: pd.DataFrame,
    pack_meta: PackMetadata,
    pack_model: ModelPack,
) -> None:
    # A sensor stuck at its median: 1 feature of 4 (a share of 0.25).
    window = clean_window.copy()
    window["body_mass_g"] = reference["body_mass_g"].median()
    result = drift(window, reference, pack_meta, pack_model, min_window_rows=100)
    assert result.dataset_drift is True
    assert [n for n, f in result.features.items() if f.drifted] == ["body_mass_g"]
    assert result.drift_share == 0.25


def test_a_sample_of_the_reference_is_not_drift(
    clean_window: pd.DataFrame,
    reference: pd.DataFrame,
    pack_meta: PackMetadata,
    pack_model: ModelPack,
) -> None:
    result = drift(clean_window, reference, pack_meta, pack_model)
    assert result.dataset_drift is False and result.drifted == []
    assert result.drifted_columns == 0
    assert not any(o.drifted for o in result.outputs.values())
    shares = result.label_share_live
    assert shares.keys() == set(pack_meta.labels)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_repeated_rows_count_once(
    reference: pd.DataFrame, pack_meta: PackMetadata, pack_model: ModelPack
) -> None:
    # 1,000 rows that are 100 distinct rows, each sent ten times.
    base = reference.sample(100, random_state=3).drop(columns=["label"])
    window = pd.concat([base] * 10, ignore_index=True)
    result = drift(window, reference, pack_meta, pack_model)
    assert result.skipped and result.distinct_rows == 100
    assert "1000 rows with inputs, 900 of them repeats" in (result.reason or "")
    assert "100 distinct, fewer than min_window_rows=200" in (result.reason or "")
    # Judged on its 100 distinct rows, a subset of the reference is no drift.
    judged = drift(window, reference, pack_meta, pack_model, min_window_rows=100)
    assert judged.distinct_rows == 100 and judged.window_rows == 1000
    assert judged.dataset_drift is False


def test_the_evidently_report_uses_the_detectors_tests_and_threshold(
    drifted_window: pd.DataFrame,
    reference: pd.DataFrame,
    pack_meta: PackMetadata,
    pack_model: ModelPack,
) -> None:
    # A reference over 1,000 rows, where Evidently alone would switch statistic.
    rng = np.random.default_rng(0)
    big = pd.concat([reference] * 6, ignore_index=True)
    for name in pack_meta.feature_names:
        big[name] += rng.normal(0, 0.01 * reference[name].std(), len(big))
    result = drift(
        drifted_window, big, pack_meta, pack_model,
        detector=DetectorConfig(alpha=0.02), with_report=True,
    )  # fmt: skip
    assert result.reference_rows > 1000
    level = result.per_test_alpha
    assert level == pytest.approx(0.02 / 12)
    configs = {
        m["config"]["column"]: m["config"]
        for m in result.snapshot.dict()["metrics"]
        if m["config"].get("type", "").endswith("ValueDrift")
    }
    relations = {f"relation_{name}" for name in result.relations}
    assert set(configs) == {*result.features, *relations, *result.outputs}
    for name, config in configs.items():
        expected = "chisquare" if name == "predicted_label" else "ks"
        assert (config["method"], config["threshold"]) == (expected, level), name
    metadata = result.snapshot.to_snapshot_model().metadata
    assert "bill_length_mm ks=" in metadata["drifted"]
    assert metadata["drift_verdict"] == "drift"


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
    window = window.drop_duplicates(subset=pack_meta.feature_names)
    result = drift(window, reference, pack_meta)
    assert result.abstained_share == pytest.approx(
        window["predicted_label"].isna().mean()
    )
    assert 0 < (result.abstained_share or 0) < 1
    assert sum(result.label_share_live.values()) == pytest.approx(1.0)


def test_reference_without_predictions_uses_its_true_labels(
    clean_window: pd.DataFrame, reference: pd.DataFrame, pack_meta: PackMetadata
) -> None:
    ref = reference.drop(columns=["predicted_label"])
    result = drift(clean_window, ref, pack_meta)
    expected = ref.drop_duplicates(subset=pack_meta.feature_names)["label"]
    assert result.label_share_reference == pytest.approx(
        expected.value_counts(normalize=True).to_dict()
    )
    assert set(result.outputs) == {"predicted_label"}


def test_a_window_missing_a_feature_column_is_an_error_naming_it(
    clean_window: pd.DataFrame, reference: pd.DataFrame, pack_meta: PackMetadata
) -> None:
    with pytest.raises(DriftInputInvalid, match="body_mass_g"):
        drift(clean_window.drop(columns=["body_mass_g"]), reference, pack_meta)
