"""One drift comparison: a window of logged live rows against the pack's reference.

`run_drift` runs Evidently 0.7's `DataDriftPreset` over the feature columns (data
drift per feature, share of drifted columns, dataset drift when that share reaches
`drift_share`) plus a `ValueDrift` on the predicted label (prediction drift) and the
live predicted-label shares. Evidently picks the per-column statistic by size: a
K-S / chi-square p-value (drift below 0.05) for up to 1,000 reference rows, a
Wasserstein / Jensen-Shannon distance (drift at 0.1 or above) beyond; the method is
recorded per feature. A window with fewer than `min_window_rows` rows is *skipped*
with a reason: too little data is not evidence of "no drift".

Evidently is imported inside `run_drift` (~4 s, ~280 MiB on first import), never at
module import, so a worker that never runs a drift job never pays for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pandas as pd

from monitoring.errors import DriftInputInvalid

PREDICTION_COLUMN = "predicted_label"
LABEL_COLUMN = "label"


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column: Evidently's score, the method, and its verdict."""

    score: float
    method: str
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """The outcome of one drift run; `skipped` runs carry only a reason and sizes."""

    skipped: bool
    reason: str | None
    model_version: str
    window_rows: int
    reference_rows: int
    min_window_rows: int
    drift_share_threshold: float
    computed_at: datetime
    dataset_drift: bool | None = None
    """Share of drifted feature columns >= `drift_share_threshold`; None if skipped."""
    drift_share: float | None = None
    drifted_columns: int | None = None
    features: dict[str, ColumnDrift] = field(default_factory=dict)
    prediction_drift: ColumnDrift | None = None
    label_share_live: dict[str, float] = field(default_factory=dict)
    """Share of each predicted label among non-abstained live rows."""
    label_share_reference: dict[str, float] = field(default_factory=dict)
    abstained_share: float | None = None
    """Share of live rows without a predicted label (abstentions)."""
    rows_without_inputs: int = 0
    """Window rows logged without inputs (policy), left out of the comparison."""
    html_path: str | None = None
    snapshot_id: str | None = None
    """Where the drift job saved the HTML report and the workspace snapshot."""
    snapshot: Any = field(default=None, repr=False, compare=False)
    """The Evidently `Snapshot` (for the HTML report and the workspace); not JSON."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no snapshot; NaN scores become None)."""
        out = asdict(self)
        out.pop("snapshot", None)
        out["computed_at"] = self.computed_at.isoformat()
        return _nan_to_none(out)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def skipped_result(
    reason: str,
    *,
    window_rows: int,
    rows_without_inputs: int = 0,
    reference_rows: int,
    min_window_rows: int,
    drift_share: float,
    model_version: str,
) -> DriftResult:
    return DriftResult(
        skipped=True,
        reason=reason,
        model_version=model_version,
        window_rows=window_rows,
        rows_without_inputs=rows_without_inputs,
        reference_rows=reference_rows,
        min_window_rows=min_window_rows,
        drift_share_threshold=drift_share,
        computed_at=datetime.now(UTC),
    )


def run_drift(
    window: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    feature_names: Sequence[str],
    min_window_rows: int,
    drift_share: float,
    model_version: str,
    tags: Sequence[str] = (),
    metadata: dict[str, str] | None = None,
) -> DriftResult:
    """Compare `window` (features + `predicted_label`) with `reference`.

    `reference` holds the features and `label`, and maybe `predicted_label` (the
    model's answers on the reference rows); without it the true labels stand in
    for the reference predicted-label distribution.
    """
    features = list(feature_names)
    _require(window, "log window", [*features, PREDICTION_COLUMN])
    ref_pred = PREDICTION_COLUMN if PREDICTION_COLUMN in reference else LABEL_COLUMN
    _require(reference, "reference", [*features, ref_pred])
    # Rows logged without inputs (the policy may forbid storing them) say nothing
    # about feature drift; they are counted, not compared.
    usable = window.dropna(subset=features, how="all")
    skip = partial(
        skipped_result,
        window_rows=len(usable),
        rows_without_inputs=len(window) - len(usable),
        reference_rows=len(reference),
        min_window_rows=min_window_rows,
        drift_share=drift_share,
        model_version=model_version,
    )
    if len(usable) < min_window_rows:
        dropped = len(window) - len(usable)
        without = f" ({dropped} more without inputs)" if dropped else ""
        return skip(
            f"window has {len(usable)} rows with inputs{without}, fewer than "
            f"min_window_rows={min_window_rows}: not enough evidence either way"
        )
    if len(reference) == 0:
        return skip("reference table is empty")

    current = _frame(usable, features, PREDICTION_COLUMN)
    ref = _frame(reference, features, ref_pred)
    computed_at = datetime.now(UTC)
    snapshot = _evidently_snapshot(
        current,
        ref,
        features=features,
        drift_share=drift_share,
        computed_at=computed_at,
        tags=[f"model_version={model_version}", *tags],
        metadata={"model_version": model_version, "window_rows": str(len(usable)),
                  **(metadata or {})},
    )  # fmt: skip
    columns = _column_drift(snapshot.dict())
    feature_drift = {name: columns[name] for name in features}
    drifted = sum(c.drifted for c in feature_drift.values())
    share = drifted / len(features)
    live = current[PREDICTION_COLUMN]
    return DriftResult(
        skipped=False,
        reason=None,
        model_version=model_version,
        window_rows=len(usable),
        rows_without_inputs=len(window) - len(usable),
        reference_rows=len(reference),
        min_window_rows=min_window_rows,
        drift_share_threshold=drift_share,
        computed_at=computed_at,
        # Evidently's own rule: a share equal to the threshold counts as drift.
        dataset_drift=share >= drift_share,
        drift_share=share,
        drifted_columns=drifted,
        features=feature_drift,
        prediction_drift=columns.get(PREDICTION_COLUMN),
        label_share_live=_shares(live),
        label_share_reference=_shares(ref[PREDICTION_COLUMN]),
        abstained_share=float(live.isna().mean()),
        snapshot=snapshot,
    )


def _require(frame: pd.DataFrame, table: str, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DriftInputInvalid(table, missing, [str(c) for c in frame.columns])


def _frame(frame: pd.DataFrame, features: list[str], pred: str) -> pd.DataFrame:
    out = frame[features].astype("float64")
    # Abstained rows have no label: keep them as missing (Evidently's drift tests
    # ignore missing values) rather than inventing a category the reference lacks.
    labels = frame[pred]
    out[PREDICTION_COLUMN] = labels.where(labels.notna(), None).astype("object")
    return out.reset_index(drop=True)


def _shares(labels: pd.Series) -> dict[str, float]:
    counts = labels.dropna().astype(str).value_counts(normalize=True)
    return {str(k): float(v) for k, v in counts.items()}


def _evidently_snapshot(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    features: list[str],
    drift_share: float,
    computed_at: datetime,
    tags: list[str],
    metadata: dict[str, str],
) -> Any:
    from monitoring.evidently_import import import_evidently

    import_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import UniqueValueCount, ValueDrift
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=features, categorical_columns=[PREDICTION_COLUMN]
    )
    report = Report(
        [
            DataDriftPreset(columns=features, drift_share=drift_share),
            ValueDrift(column=PREDICTION_COLUMN),
            UniqueValueCount(column=PREDICTION_COLUMN),
        ],
        # The per-column tests carry Evidently's drifted / not-drifted verdict,
        # whichever statistic (p-value or distance) it picked.
        include_tests=True,
    )
    return report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
        timestamp=computed_at,
        tags=tags,
        metadata=metadata,
    )


def _column_drift(results: dict[str, Any]) -> dict[str, ColumnDrift]:
    """Per-column score, method and verdict from a snapshot's metrics and tests."""
    verdicts: dict[str, bool] = {}
    for test in results["tests"]:
        params = test["metric_config"]["params"]
        if params.get("type", "").endswith("ValueDrift"):
            status = getattr(test["status"], "value", test["status"])
            verdicts[params["column"]] = str(status).upper() == "FAIL"
    out: dict[str, ColumnDrift] = {}
    for metric in results["metrics"]:
        config = metric.get("config", {})
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        column = config["column"]
        out[column] = ColumnDrift(
            score=float(metric["value"]),
            method=str(config.get("method")),
            threshold=float(config.get("threshold") or math.nan),
            drifted=verdicts.get(column, False),
        )
    return out
