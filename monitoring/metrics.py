"""Every Prometheus metric the service exposes, created on a registry passed in.

Several BentoML workers: BentoML starts each worker process with
`PROMETHEUS_MULTIPROC_DIR` in its environment and serves `/metrics` by reading every
`*.db` file there with `prometheus_client.multiprocess.MultiProcessCollector`
(`bentoml/_internal/server/metrics/prometheus.py: generate_latest`). Any metric made
with plain `prometheus_client` inside a worker therefore writes to those files and is
summed across workers; `bentoml.metrics` is only a deprecated alias of the same
module. The registry passed here only matters without multiprocess mode (unit
tests). Build `ServiceMetrics` inside the worker (the service's `__init__`), never at
module import: the `bentoml serve` parent imports the service module too, without the
env var.

Gauges need a multiprocess mode, chosen per gauge:
- `livemax` for the model/policy info gauges: 1 while any live worker serves that
  version, so during a rolling swap both versions show.
- `livesum` for the prediction-log queue depth: each worker has its own queue.
- `livemostrecent` for estimated priors: each worker estimates from the same traffic;
  the freshest estimate is the one to show, one series per label (not per pid).
- `mostrecent` for drift gauges: one drift job writes them; the last result stands
  even after the process that computed it has exited.

Label cardinality is bounded: every label value comes from an allow-list given at
construction (pack labels, stage names, abstention reasons, report categories,
endpoints, features); anything else is counted as `other`. Children are created once
here, so the hot path does dictionary look-ups and mmap writes only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import values as _prom_values

OTHER = "other"
NONE = "none"

DEFAULT_ENDPOINTS = ("predict", "report")

# A whole request takes ~1 ms; a stage can take ~10 µs: buckets start well below.
REQUEST_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
STAGE_BUCKETS_S = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
BATCH_ROWS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class _Bounded:
    """Children of one labelled metric for an allow-list of values, plus `other`."""

    __slots__ = ("children", "other")

    def __init__(self, metric: Any, allowed: Iterable[str], *prefix: str):
        self.children = {v: metric.labels(*prefix, v) for v in allowed}
        if OTHER not in self.children:
            self.children[OTHER] = metric.labels(*prefix, OTHER)
        self.other = self.children[OTHER]

    def __getitem__(self, value: str) -> Any:
        return self.children.get(value, self.other)


def observe_counts(histogram_child: Any, counts: Sequence[float] | np.ndarray) -> None:
    """`observe` the value k `counts[k]` times on a prometheus_client Histogram
    child, in one write per bucket (the first bound >= k, as `observe`)."""
    weights = np.asarray(counts, dtype=np.float64)
    values = np.arange(len(weights), dtype=np.float64)
    bounds = np.asarray(histogram_child._upper_bounds)
    per_bucket = np.bincount(
        np.searchsorted(bounds, values, side="left"),
        weights=weights,
        minlength=len(bounds),
    )
    for i, count in enumerate(per_bucket.tolist()):
        if count:
            histogram_child._buckets[i].inc(count)
    histogram_child._sum.inc(float(values @ weights))


class ServiceMetrics:
    """The service's metrics; hot-path methods are small and allocation-light."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        labels: Sequence[str],
        stages: Sequence[str],
        guardrail_stages: Sequence[str],
        abstain_reasons: Sequence[str],
        endpoints: Sequence[str] = DEFAULT_ENDPOINTS,
        report_categories: Sequence[str] = (),
        namespace: str = "flywheel",
    ):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.labels = tuple(labels)
        self._lock = threading.Lock()
        self._model_info: tuple[str, str, str] | None = None
        self._policy_info: str | None = None
        r, ns = self.registry, namespace

        request = Histogram(
            "request_duration_seconds",
            "Time to answer one request, measured inside the service, by endpoint.",
            ["endpoint"], namespace=ns, registry=r, buckets=REQUEST_BUCKETS_S,
        )  # fmt: skip
        stage = Histogram(
            "stage_duration_seconds",
            "Time spent in one stage of a request, by endpoint and stage.",
            ["endpoint", "stage"], namespace=ns, registry=r, buckets=STAGE_BUCKETS_S,
        )  # fmt: skip
        batch = Histogram(
            "batch_rows",
            "Rows (instances) per request, by endpoint.",
            ["endpoint"], namespace=ns, registry=r, buckets=BATCH_ROWS_BUCKETS,
        )  # fmt: skip
        self._request = _Bounded(request, endpoints)
        self._batch = _Bounded(batch, endpoints)
        self._stage = {e: _Bounded(stage, stages, e) for e in (*endpoints, OTHER)}
        self._predictions = _Bounded(
            Counter("predictions", "Rows answered with a label, by label.",
                    ["label"], namespace=ns, registry=r),
            self.labels,
        )  # fmt: skip
        self._abstentions = _Bounded(
            Counter("abstentions", "Rows answered with an abstention, by reason.",
                    ["reason"], namespace=ns, registry=r),
            abstain_reasons,
        )  # fmt: skip
        self._guardrail_actions = _Bounded(
            Counter("guardrail_actions",
                    "Rows on which a guardrail stage acted (changed or refused).",
                    ["stage"], namespace=ns, registry=r),
            guardrail_stages,
        )  # fmt: skip
        self._set_size = Histogram(
            "prediction_set_size",
            "Labels in each row's conformal prediction set (0: empty).",
            namespace=ns, registry=r,
            buckets=tuple(float(i) for i in range(len(self.labels) + 1)),
        )  # fmt: skip
        self._init_feedback_and_state(r, ns, report_categories)

    def _init_feedback_and_state(
        self, r: CollectorRegistry, ns: str, report_categories: Sequence[str]
    ) -> None:
        """Reports, the prediction log, served versions and estimated priors."""
        self._reports = Counter(
            "reports", "Bad-result reports accepted.", namespace=ns, registry=r
        )
        self._report_categories = _Bounded(
            Counter("report_categories",
                    "Categories tagged on accepted reports (`none` if untagged).",
                    ["category"], namespace=ns, registry=r),
            (*report_categories, NONE),
        )  # fmt: skip
        self._log_queue = Gauge(
            "prediction_log_queue_rows",
            "Prediction-log rows waiting to be written, summed over workers.",
            namespace=ns, registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self._log_dropped = Counter(
            "prediction_log_dropped_rows",
            "Answered rows that never reached the log (none by design: a row the log "
            "cannot take is refused with 503 instead).",
            namespace=ns, registry=r,
        )  # fmt: skip
        self._log_written = Counter(
            "prediction_log_written_rows",
            "Prediction-log rows written to the store.",
            namespace=ns, registry=r,
        )  # fmt: skip
        self._log_refused = Counter(
            "prediction_log_refused_rows",
            "Rows of requests answered 503 because the log could not take them.",
            namespace=ns, registry=r,
        )  # fmt: skip
        self._log_sample_rate = Gauge(
            "prediction_log_sample_rate",
            "Share of answered rows the prediction log keeps (1: every row).",
            namespace=ns, registry=r, multiprocess_mode="livemin",
        )  # fmt: skip
        self._model_gauge = Gauge(
            "model_info",
            "1 for the model pack version a live worker serves (and the onnxruntime "
            "execution provider it really runs on), 0 after a swap.",
            ["pack", "version", "provider"], namespace=ns, registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self._policy_gauge = Gauge(
            "policy_info",
            "1 for the guardrail policy version a live worker serves, 0 after a swap.",
            ["version"], namespace=ns, registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self._follow_failing = Gauge(
            "served_state_follow_failing",
            "1 while a worker cannot load the pack or policy its deployment's row "
            "names (it keeps serving the old one), else 0.",
            namespace=ns, registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self._priors = _Bounded(
            Gauge("estimated_prior",
                  "Current deployment prior estimate per label (online EM).",
                  ["label"], namespace=ns, registry=r,
                  multiprocess_mode="livemostrecent"),
            self.labels,
        )  # fmt: skip

    @property
    def multiprocess(self) -> bool:
        """True when prometheus_client writes to multiprocess files (under BentoML)."""
        return bool(getattr(_prom_values.ValueClass, "_multiprocess", False))

    # ---- hot path -------------------------------------------------------------

    def observe_prediction(
        self,
        endpoint: str,
        rows: int,
        label_counts: Mapping[str | None, int] | Sequence[int],
        abstain_reasons: Mapping[str | None, int] | None = None,
        stage_seconds: Mapping[str, float] | None = None,
        *,
        total_seconds: float | None = None,
        guardrail_actions: Mapping[str, int] | None = None,
        prediction_set_size_counts: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        """Record one answered request.

        `label_counts` is either {label: rows} or counts aligned with `labels` (e.g.
        `numpy.bincount(idx, minlength=k)`); zero counts are skipped.
        `prediction_set_size_counts[k]` is how many rows' prediction set holds k
        labels (`numpy.bincount` of the set sizes).
        """
        self._batch[endpoint].observe(rows)
        if total_seconds is not None:
            self._request[endpoint].observe(total_seconds)
        if stage_seconds:
            stages = self._stage.get(endpoint) or self._stage[OTHER]
            for stage, seconds in stage_seconds.items():
                stages[stage].observe(seconds)
        if isinstance(label_counts, Mapping):
            for label, n in label_counts.items():
                if n and label is not None:  # None: abstained rows
                    self._predictions[label].inc(n)
        else:
            children = self._predictions.children
            for label, n in zip(self.labels, label_counts, strict=False):
                if n:
                    children[label].inc(int(n))
        if abstain_reasons:
            for reason, n in abstain_reasons.items():
                if n and reason is not None:  # None: answered rows
                    self._abstentions[reason].inc(n)
        if guardrail_actions:
            for stage, n in guardrail_actions.items():
                if n:
                    self._guardrail_actions[stage].inc(n)
        if prediction_set_size_counts is not None:
            observe_counts(self._set_size, prediction_set_size_counts)

    def observe_request(
        self,
        endpoint: str,
        total_seconds: float,
        stage_seconds: Mapping[str, float] | None = None,
    ) -> None:
        """Latency of a request that is not a prediction (e.g. /report)."""
        self._request[endpoint].observe(total_seconds)
        if stage_seconds:
            stages = self._stage.get(endpoint) or self._stage[OTHER]
            for stage, seconds in stage_seconds.items():
                stages[stage].observe(seconds)

    def observe_report(self, categories: Iterable[str] = ()) -> None:
        self._reports.inc()
        tagged = False
        for category in categories:
            self._report_categories[category].inc()
            tagged = True
        if not tagged:
            self._report_categories[NONE].inc()

    # ---- prediction log -------------------------------------------------------

    def set_log_queue_rows(self, rows: int) -> None:
        self._log_queue.set(rows)

    def add_log_dropped(self, rows: int) -> None:
        if rows:
            self._log_dropped.inc(rows)

    def add_log_written(self, rows: int) -> None:
        if rows:
            self._log_written.inc(rows)

    def add_log_refused(self, rows: int) -> None:
        if rows:
            self._log_refused.inc(rows)

    def set_log_sample_rate(self, rate: float) -> None:
        self._log_sample_rate.set(rate)

    # ---- versions and priors --------------------------------------------------

    def set_model_version(
        self, pack: str, version: str, provider: str = "unknown"
    ) -> None:
        """Mark `pack`/`version` (on `provider`) as served; the previous one drops
        to 0.

        The old series is zeroed rather than removed: removal is not implemented
        in multiprocess mode, and a 0 keeps the swap visible in Prometheus.
        """
        key = (pack, version, provider)
        with self._lock:
            if self._model_info is not None and self._model_info != key:
                self._model_gauge.labels(*self._model_info).set(0)
            self._model_gauge.labels(*key).set(1)
            self._model_info = key

    def set_policy_version(self, version: str) -> None:
        with self._lock:
            if self._policy_info is not None and self._policy_info != version:
                self._policy_gauge.labels(self._policy_info).set(0)
            self._policy_gauge.labels(version).set(1)
            self._policy_info = version

    def set_follow_failing(self, failing: bool) -> None:
        self._follow_failing.set(1 if failing else 0)

    def set_estimated_priors(self, priors: Mapping[str, float]) -> None:
        for label, value in priors.items():
            self._priors[label].set(value)
