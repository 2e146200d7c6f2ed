"""One drift comparison: a window of logged live rows against the pack's reference.

The verdict comes from `monitoring.detector`: a K-S test per numeric feature, per
feature relation (`monitoring.relations`) and per class probability of the
model, a chi-square test per categorical column and on the predicted label,
combined with a Bonferroni correction at the family-wise `alpha` of the settings.
One drifted column makes the window drifted. Evidently 0.7 computes the report
and the dashboards from the same configuration: the same tests, passed per column
with the same per-test threshold, never the statistic it would pick from the
reference size.

Evidence is counted in distinct rows: identical input rows (a client retrying, a
cache replaying one request) are kept once, in the window and in the reference,
so a thousand copies of one row weigh as one. A window with fewer than
`min_window_rows` distinct rows is *skipped* with a reason: too little data is not
evidence of "no drift".

Evidently is imported inside `run_drift` (~4 s, ~280 MiB on first import), never at
module import, so a process that never runs a drift job never pays for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from monitoring.detector import (
    EVIDENTLY_METHOD,
    PREDICTION_COLUMN,
    Column,
    ColumnTest,
    DetectorConfig,
    Verdict,
    detect,
    output_columns,
    probability_columns,
)
from monitoring.errors import DriftInputInvalid
from monitoring.relations import relation_columns, relation_name

LABEL_COLUMN = "label"

#: The model's class probabilities for a feature matrix (rows x features).
PredictProba = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ColumnDrift:
    """One tested column: the test, its statistic and p-value, and its verdict."""

    score: float
    """The p-value (kept under this name for the gauges and the dashboards)."""
    method: str
    threshold: float
    """Per-test p-value threshold: family-wise alpha / number of tests."""
    drifted: bool
    statistic: float = math.nan
    kind: str = "feature"


@dataclass(frozen=True)
class DriftResult:
    """The outcome of one drift run; `skipped` runs carry only a reason and sizes."""

    skipped: bool
    reason: str | None
    model_version: str
    window_rows: int
    reference_rows: int
    min_window_rows: int
    alpha: float
    """Family-wise false-alarm rate per window the verdict was made at."""
    computed_at: datetime
    dataset_drift: bool | None = None
    """At least one test (feature or output) drifted; None if skipped."""
    drift_share: float | None = None
    """Share of feature columns that drifted (informative; not the verdict)."""
    drifted_columns: int | None = None
    features: dict[str, ColumnDrift] = field(default_factory=dict)
    relations: dict[str, ColumnDrift] = field(default_factory=dict)
    """Tests of each feature against what the other features predict for it
    (`monitoring.relations`), by feature name."""
    outputs: dict[str, ColumnDrift] = field(default_factory=dict)
    """Tests on the model's outputs: each class probability, the predicted label."""
    prediction_drift: ColumnDrift | None = None
    per_test_alpha: float | None = None
    distinct_rows: int | None = None
    """Distinct input rows in the window: the evidence the tests weighed."""
    label_share_live: dict[str, float] = field(default_factory=dict)
    """Share of each predicted label among non-abstained live rows."""
    label_share_reference: dict[str, float] = field(default_factory=dict)
    abstained_share: float | None = None
    """Share of live rows without a predicted label (abstentions)."""
    rows_without_inputs: int = 0
    """Window rows logged without inputs (policy), left out of the comparison."""
    window_end: datetime | None = None
    """`created_at` of the newest row judged (where the next window starts)."""
    html_path: str | None = None
    snapshot_id: str | None = None
    """Where the drift job saved the HTML report and the workspace snapshot."""
    snapshot: Any = field(default=None, repr=False, compare=False)
    """The Evidently `Snapshot` (for the HTML report and the workspace); not JSON."""

    @property
    def drifted(self) -> list[tuple[str, ColumnDrift]]:
        """Every drifted column (features, relations, outputs), smallest p-value
        first; a relation is named `relation_<feature>`."""
        cols = [
            *self.features.items(),
            *((relation_name(n), c) for n, c in self.relations.items()),
            *self.outputs.items(),
        ]
        return sorted(((n, c) for n, c in cols if c.drifted), key=lambda x: x[1].score)

    def summary(self) -> str:
        """One line naming what drifted, with test, statistic and p-value."""
        if self.skipped:
            return f"skipped: {self.reason}"
        if not self.dataset_drift:
            return f"no drift in {self.distinct_rows} distinct rows"
        parts = [
            f"{name} ({c.kind}, {c.method} statistic {c.statistic:.3g}, "
            f"p={c.score:.2g} < {c.threshold:.2g})"
            for name, c in self.drifted
        ]
        return "drifted: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no snapshot; NaN scores become None)."""
        out = asdict(self)
        out.pop("snapshot", None)
        out["computed_at"] = self.computed_at.isoformat()
        out["window_end"] = self.window_end.isoformat() if self.window_end else None
        out["summary"] = self.summary()
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
    alpha: float,
    model_version: str,
    distinct_rows: int | None = None,
) -> DriftResult:
    return DriftResult(
        skipped=True,
        reason=reason,
        model_version=model_version,
        window_rows=window_rows,
        rows_without_inputs=rows_without_inputs,
        reference_rows=reference_rows,
        min_window_rows=min_window_rows,
        alpha=alpha,
        distinct_rows=distinct_rows,
        computed_at=datetime.now(UTC),
    )


def run_drift(
    window: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    feature_names: Sequence[str],
    min_window_rows: int,
    detector: DetectorConfig,
    model_version: str,
    predict_proba: PredictProba | None = None,
    labels: Sequence[str] | None = None,
    categorical_features: Sequence[str] = (),
    tags: Sequence[str] = (),
    metadata: dict[str, str] | None = None,
    with_report: bool = True,
) -> DriftResult:
    """Compare `window` (features + `predicted_label`) with `reference`.

    `reference` holds the features and `label`, and maybe `predicted_label`. With
    `predict_proba` (the served model) and `labels` the model's outputs on both
    sides are tested too: each class probability and the predicted label (its
    argmax, so guardrails that change answers do not read as drift). Without it
    the logged predicted labels are compared with the reference's (its true
    labels when it has no predictions). `with_report=False` skips Evidently (the
    benchmark judges thousands of windows).
    """
    features = list(feature_names)
    _require(window, "log window", [*features, PREDICTION_COLUMN])
    ref_pred = PREDICTION_COLUMN if PREDICTION_COLUMN in reference else LABEL_COLUMN
    _require(reference, "reference", [*features, ref_pred])
    # Rows logged without inputs (the policy may forbid storing them) say nothing
    # about feature drift; they are counted, not compared.
    usable = window.dropna(subset=features, how="all")
    distinct = usable.drop_duplicates(subset=features)
    skip = partial(
        skipped_result,
        window_rows=len(usable),
        rows_without_inputs=len(window) - len(usable),
        reference_rows=len(reference),
        min_window_rows=min_window_rows,
        alpha=detector.alpha,
        model_version=model_version,
        distinct_rows=len(distinct),
    )
    if len(distinct) < min_window_rows:
        dropped = len(window) - len(usable)
        without = f" ({dropped} more without inputs)" if dropped else ""
        repeats = len(usable) - len(distinct)
        repeated = f", {repeats} of them repeats of another row" if repeats else ""
        return skip(
            f"window has {len(usable)} rows with inputs{without}{repeated}: "
            f"{len(distinct)} distinct, fewer than min_window_rows="
            f"{min_window_rows}: not enough evidence either way"
        )
    ref_distinct = reference.drop_duplicates(subset=features)
    if len(ref_distinct) == 0:
        return skip("reference table is empty")

    current = _frame(distinct, features, PREDICTION_COLUMN)
    ref = _frame(ref_distinct, features, ref_pred)
    categorical = set(categorical_features)
    columns = [
        Column(name, "feature", name in categorical,
               current[name].to_numpy(), ref[name].to_numpy())
        for name in features
    ]  # fmt: skip
    numeric = [name for name in features if name not in categorical]
    relations = relation_columns(
        current[numeric].to_numpy(dtype="float64"),
        ref[numeric].to_numpy(dtype="float64"),
        numeric,
    )
    for column in relations:  # the report shows them too
        current[column.name] = column.current
        ref[column.name] = column.reference
    columns += relations
    if predict_proba is not None:
        if not labels:
            raise ValueError("labels are needed to test the model's outputs")
        for frame in (current, ref):
            _add_outputs(frame, features, predict_proba, list(labels))
        tested = probability_columns(labels)
        columns += output_columns(
            current[tested].to_numpy(), ref[tested].to_numpy(), list(labels),
            current_labels=current["model_label"].to_numpy(),
            reference_labels=ref["model_label"].to_numpy(),
        )  # fmt: skip
    else:
        columns.append(
            Column(PREDICTION_COLUMN, "output", True,
                   current[PREDICTION_COLUMN].to_numpy(),
                   ref[PREDICTION_COLUMN].to_numpy())
        )  # fmt: skip
    verdict = detect(columns, detector)
    computed_at = datetime.now(UTC)
    snapshot = None
    if with_report:
        snapshot = _evidently_snapshot(
            current, ref, columns=columns, verdict=verdict, computed_at=computed_at,
            tags=[f"model_version={model_version}", *tags],
            metadata={"model_version": model_version,
                      "window_rows": str(len(usable)),
                      "drift_verdict": "drift" if verdict.drifted else "no drift",
                      "drifted": _drifted_text(verdict), **(metadata or {})},
        )  # fmt: skip
    by_name = {t.name: _column_drift(t) for t in verdict.tests}
    feature_drift = {name: by_name[name] for name in features}
    relation_drift = {
        name: by_name[relation_name(name)]
        for name in numeric
        if relation_name(name) in by_name
    }
    outputs = {t.name: by_name[t.name] for t in verdict.tests if t.kind == "output"}
    drifted = sum(c.drifted for c in feature_drift.values())
    live = current[PREDICTION_COLUMN]
    return DriftResult(
        skipped=False,
        reason=None,
        model_version=model_version,
        window_rows=len(usable),
        rows_without_inputs=len(window) - len(usable),
        reference_rows=len(reference),
        min_window_rows=min_window_rows,
        alpha=detector.alpha,
        per_test_alpha=verdict.per_test_alpha,
        distinct_rows=len(distinct),
        computed_at=computed_at,
        dataset_drift=verdict.drifted,
        drift_share=drifted / len(features),
        drifted_columns=drifted,
        features=feature_drift,
        relations=relation_drift,
        outputs=outputs,
        prediction_drift=outputs.get(PREDICTION_COLUMN),
        label_share_live=_shares(live),
        label_share_reference=_shares(ref[PREDICTION_COLUMN]),
        abstained_share=float(live.isna().mean()),
        window_end=_newest(window),
        snapshot=snapshot,
    )


def _column_drift(test: ColumnTest) -> ColumnDrift:
    return ColumnDrift(
        score=test.p_value,
        method=test.test,
        threshold=test.threshold,
        drifted=test.drifted,
        statistic=test.statistic,
        kind=test.kind,
    )


def _drifted_text(verdict: Verdict) -> str:
    return ", ".join(
        f"{t.name} {t.test}={t.statistic:.3g} p={t.p_value:.2g}"
        for t in verdict.drifted_tests
    )


def _newest(window: pd.DataFrame) -> datetime | None:
    if "created_at" not in window or window.empty:
        return None
    newest = pd.Timestamp(window["created_at"].max())
    return None if pd.isna(newest) else newest.to_pydatetime()


def _add_outputs(
    frame: pd.DataFrame,
    features: list[str],
    predict_proba: PredictProba,
    labels: list[str],
) -> None:
    """The model's probabilities and argmax label on the complete rows (a row
    missing a feature cannot be scored: its outputs stay missing)."""
    complete = frame[features].notna().all(axis=1).to_numpy()
    proba = np.full((len(frame), len(labels)), np.nan)
    if complete.any():
        x = frame.loc[complete, features].to_numpy(dtype="float32")
        proba[complete] = np.asarray(predict_proba(x), dtype="float64")
    for i, label in enumerate(labels):
        frame[f"proba_{label}"] = proba[:, i]
    argmax = np.array(labels, dtype=object)[np.nan_to_num(proba).argmax(axis=1)]
    frame["model_label"] = np.where(complete, argmax, None)


def _require(frame: pd.DataFrame, table: str, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DriftInputInvalid(table, missing, [str(c) for c in frame.columns])


def _frame(frame: pd.DataFrame, features: list[str], pred: str) -> pd.DataFrame:
    out = frame[features].astype("float64")
    # Abstained rows have no label: keep them as missing (the tests leave missing
    # values out) rather than inventing a category the reference lacks.
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
    columns: list[Column],
    verdict: Verdict,
    computed_at: datetime,
    tags: list[str],
    metadata: dict[str, str],
) -> Any:
    """Evidently's report on the tested columns, each with the detector's test and
    per-test threshold; its dataset drift is "at least one column drifted"."""
    from monitoring.evidently_import import import_evidently

    import_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import UniqueValueCount, ValueDrift
    from evidently.presets import DataDriftPreset

    if "model_label" in current:
        # The output test compares the model's argmax labels: the report does too.
        current = current.assign(**{PREDICTION_COLUMN: current["model_label"]})
        reference = reference.assign(**{PREDICTION_COLUMN: reference["model_label"]})
    numeric = [c.name for c in columns if not c.categorical]
    categorical = [c.name for c in columns if c.categorical and c.kind == "feature"]
    method = {
        c.name: EVIDENTLY_METHOD[t.test]
        for c, t in zip(columns, verdict.tests, strict=True)
    }
    in_preset = [*numeric, *categorical]
    definition = DataDefinition(
        numerical_columns=numeric,
        categorical_columns=[*categorical, PREDICTION_COLUMN],
    )
    level = verdict.per_test_alpha
    report = Report(
        [
            DataDriftPreset(
                columns=in_preset,
                # "At least one drifted column" is the dataset verdict.
                drift_share=min(1.0, 1.0 / len(in_preset)),
                per_column_method={c: method[c] for c in in_preset},
                per_column_threshold=dict.fromkeys(in_preset, level),
            ),
            ValueDrift(
                column=PREDICTION_COLUMN,
                method=method.get(PREDICTION_COLUMN, "chisquare"),
                threshold=level,
            ),
            UniqueValueCount(column=PREDICTION_COLUMN),
        ],
        include_tests=True,
    )
    keep = [*in_preset, PREDICTION_COLUMN]
    return report.run(
        Dataset.from_pandas(current[keep], data_definition=definition),
        Dataset.from_pandas(reference[keep], data_definition=definition),
        timestamp=computed_at,
        tags=tags,
        metadata=metadata,
    )
