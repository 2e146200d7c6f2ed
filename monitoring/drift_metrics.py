"""The drift job's and the retraining trigger's Prometheus metrics.

They are written by the drift job (a child process of one worker, or a cron job)
and read on the service's `/metrics` through the multiprocess files it shares with
the workers. Gauges use the `mostrecent` mode: one job writes them, and the last
result stands after the process that computed it has exited.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitoring.accuracy import ACCURACY_ESTIMATORS
from monitoring.detector import PREDICTION_COLUMN, probability_columns
from monitoring.metrics import _Bounded

if TYPE_CHECKING:
    from monitoring.accuracy_window import AccuracyReading
    from monitoring.drift import DriftResult

RETRAIN_REASONS = ("drift", "report_rate", "manual")
DRIFT_OUTCOMES = ("completed", "skipped", "failed")
HOOK_KINDS = ("command", "http")
DRIFT_RUN_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class DriftMetrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        labels: Sequence[str],
        features: Sequence[str],
        namespace: str = "flywheel",
    ):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.labels = tuple(labels)
        r, ns = self.registry, namespace

        def gauge(name: str, doc: str, labelnames: Sequence[str] = ()) -> Gauge:
            return Gauge(name, doc, labelnames, namespace=ns, registry=r,
                         multiprocess_mode="mostrecent")  # fmt: skip

        self._drift_share = gauge(
            "drift_share", "Share of feature columns drifted in the last drift run."
        )
        self._drift_detected = gauge(
            "drift_detected", "1 if the last drift run found dataset drift, else 0."
        )
        self._drift_window = gauge(
            "drift_window_rows", "Logged rows in the last drift run's window."
        )
        self._drift_last = gauge(
            "drift_last_run_timestamp_seconds", "Unix time of the last drift run."
        )
        self._prediction_drift = gauge(
            "prediction_drift_score",
            "Drift score of the predicted-label distribution in the last run.",
        )
        self._feature_score = _Bounded(
            gauge("drift_feature_score",
                  "Per-feature drift score of the last run (the test's p-value).",
                  ["feature"]),
            features,
        )  # fmt: skip
        self._feature_p = _Bounded(
            gauge("drift_feature_p_value",
                  "Per-feature drift test p-value of the last run (K-S).",
                  ["feature"]),
            features,
        )  # fmt: skip
        self._feature_drifted = _Bounded(
            gauge("drift_feature_drifted",
                  "1 if the feature's test rejected in the last run, else 0.",
                  ["feature"]),
            features,
        )  # fmt: skip
        self._relation_p = _Bounded(
            gauge("drift_relation_p_value",
                  "Per-feature relation test p-value of the last run (K-S on the "
                  "residual of the feature given the other features).",
                  ["feature"]),
            features,
        )  # fmt: skip
        self._relation_drifted = _Bounded(
            gauge("drift_relation_drifted",
                  "1 if the feature's relation test rejected in the last run, else 0.",
                  ["feature"]),
            features,
        )  # fmt: skip
        outputs = [*probability_columns(self.labels), PREDICTION_COLUMN]
        self._output_p = _Bounded(
            gauge("drift_output_p_value",
                  "Drift test p-value of each model output (class probability: "
                  "K-S; predicted label: chi-square) in the last run.",
                  ["output"]),
            outputs,
        )  # fmt: skip
        self._output_drifted = _Bounded(
            gauge("drift_output_drifted",
                  "1 if the output's test rejected in the last run, else 0.",
                  ["output"]),
            outputs,
        )  # fmt: skip
        self._test_threshold = gauge(
            "drift_test_p_value_threshold",
            "Per-test p-value threshold of the last run (alpha / number of tests).",
        )
        label_share = gauge(
            "drift_label_share",
            "Predicted-label share in the last drift window and in the reference.",
            ["window", "label"],
        )
        self._label_share = {
            w: _Bounded(label_share, self.labels, w) for w in ("live", "reference")
        }
        self._drift_runs = _Bounded(
            Counter("drift_runs", "Drift job runs, by outcome.", ["outcome"],
                    namespace=ns, registry=r),
            DRIFT_OUTCOMES,
        )  # fmt: skip
        self._drift_seconds = Histogram(
            "drift_run_duration_seconds",
            "Wall time of one drift run (window read, Evidently, report, snapshot).",
            namespace=ns, registry=r, buckets=DRIFT_RUN_BUCKETS_S,
        )  # fmt: skip
        self._estimated_accuracy = _Bounded(
            gauge("estimated_accuracy",
                  "Accuracy of the served answers in the last window, estimated "
                  "without labels, by estimator (NaN: window too small).",
                  ["estimator"]),
            ACCURACY_ESTIMATORS,
        )  # fmt: skip
        self._heldout_accuracy = gauge(
            "heldout_accuracy",
            "Accuracy of the served model on its pack's held-out validation rows.",
        )
        self._audit_accuracy = _Bounded(
            gauge("audit_accuracy",
                  "Accuracy measured on the answered audit sample of the review "
                  "queue: the estimate and its 95% Wilson interval.",
                  ["bound"]),
            ("estimate", "low", "high"),
        )  # fmt: skip
        self._audit_answered = gauge(
            "audit_answered_rows", "Audit items a person has answered."
        )
        self._accuracy_window = gauge(
            "estimated_accuracy_window_rows",
            "Answered rows the last accuracy estimate read.",
        )
        self._retrain = _Bounded(
            Counter("retraining_requests", "Retraining requests opened, by reason.",
                    ["reason"], namespace=ns, registry=r),
            RETRAIN_REASONS,
        )  # fmt: skip
        self._hook_failures = _Bounded(
            Counter("retraining_hook_failures",
                    "Retraining hooks that failed or timed out, by kind.",
                    ["kind"], namespace=ns, registry=r),
            HOOK_KINDS,
        )  # fmt: skip

    def observe_drift(self, result: DriftResult, *, seconds: float | None = None):
        """Set the drift gauges from one drift run.

        A skipped run sets share and detected to NaN: "unknown", which neither
        fires the drift alert nor reads as "no drift" on a dashboard.
        """
        self._drift_window.set(result.window_rows)
        self._drift_last.set(result.computed_at.timestamp())
        if seconds is not None:
            self._drift_seconds.observe(seconds)
        if result.skipped or result.drift_share is None:
            self._drift_runs["skipped"].inc()
            self._drift_share.set(math.nan)
            self._drift_detected.set(math.nan)
            return
        self._drift_runs["completed"].inc()
        self._drift_share.set(result.drift_share)
        self._drift_detected.set(1.0 if result.dataset_drift else 0.0)
        for name, feature in result.features.items():
            self._feature_score[name].set(feature.score)
            self._feature_p[name].set(feature.score)
            self._feature_drifted[name].set(1.0 if feature.drifted else 0.0)
        for name, relation in result.relations.items():
            self._relation_p[name].set(relation.score)
            self._relation_drifted[name].set(1.0 if relation.drifted else 0.0)
        for name, output in result.outputs.items():
            self._output_p[name].set(output.score)
            self._output_drifted[name].set(1.0 if output.drifted else 0.0)
        if result.per_test_alpha is not None:
            self._test_threshold.set(result.per_test_alpha)
        if result.prediction_drift is not None:
            self._prediction_drift.set(result.prediction_drift.score)
        for window, shares in (
            ("live", result.label_share_live),
            ("reference", result.label_share_reference),
        ):
            bounded = self._label_share[window]
            for label in self.labels:
                bounded[label].set(shares.get(label, 0.0))

    def observe_drift_failure(self) -> None:
        self._drift_runs["failed"].inc()

    def observe_accuracy(self, reading: AccuracyReading) -> None:
        """Set the accuracy gauges from one label-free estimate."""
        self._accuracy_window.set(reading.rows)
        self._heldout_accuracy.set(reading.heldout_accuracy)
        for name, value in reading.estimates.items():
            self._estimated_accuracy[name].set(value)
        audit = reading.audit
        if audit is not None:
            self._audit_answered.set(audit.answered)
            for bound, value in (
                ("estimate", audit.accuracy),
                ("low", audit.low),
                ("high", audit.high),
            ):
                self._audit_accuracy[bound].set(value)

    def observe_retraining_request(self, reason: str) -> None:
        self._retrain[reason].inc()

    def observe_hook_failure(self, kind: str) -> None:
        self._hook_failures[kind].inc()


class NullDriftMetrics:
    """Records nothing (a drift run without `--metrics`)."""

    def observe_drift(self, result: DriftResult, *, seconds: float | None = None):
        pass

    def observe_drift_failure(self) -> None:
        pass

    def observe_accuracy(self, reading: AccuracyReading) -> None:
        pass

    def observe_retraining_request(self, reason: str) -> None:
        pass

    def observe_hook_failure(self, kind: str) -> None:
        pass
