"""What the data plane hands its answers to: the prediction log and the metrics.

Both are required collaborators, typed by these protocols. Code that wants no
logging or no metrics (load-test variants, in-process benchmarks, unit tests)
passes `NullPredictionLog` or `NullMetrics`, never `None`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np

from feedback.log_batch import LogBatch


class PredictionSink(Protocol):
    """Where answered rows go (`feedback.prediction_log.PredictionLog`)."""

    def submit_batch(self, batch: LogBatch) -> bool:
        """Append one request's rows before the request is answered; raises
        `feedback.errors.PredictionLogUnavailable` (503) when it cannot."""
        ...

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Sync what was appended so far to disk."""
        ...

    @property
    def queue_depth(self) -> int:
        """Rows taken but not yet at the OS (0 for a synchronous log)."""
        ...


class MetricsSink(Protocol):
    """What the service records (`monitoring.metrics.ServiceMetrics`, usually
    behind `monitoring.metrics_buffer.MetricsBuffer`)."""

    def observe_prediction(
        self,
        endpoint: str,
        rows: int,
        label_counts: Mapping[str | None, int],
        abstain_reasons: Mapping[str | None, int] | None = None,
        stage_seconds: Mapping[str, float] | None = None,
        *,
        total_seconds: float | None = None,
        guardrail_actions: Mapping[str, int] | None = None,
        prediction_set_size_counts: Sequence[int] | np.ndarray | None = None,
    ) -> None: ...

    def observe_request(
        self,
        endpoint: str,
        total_seconds: float,
        stage_seconds: Mapping[str, float] | None = None,
    ) -> None: ...

    def observe_report(self, categories: Iterable[str] = ()) -> None: ...

    def set_model_version(
        self, pack: str, version: str, provider: str = "unknown"
    ) -> None: ...

    def set_policy_version(self, version: str) -> None: ...

    def set_follow_failing(self, failing: bool) -> None: ...

    def set_estimated_priors(self, priors: Mapping[str, float]) -> None: ...

    def set_log_queue_rows(self, rows: int) -> None: ...


class NullPredictionLog:
    """Keeps nothing: every row is taken and forgotten."""

    def submit_batch(self, batch: LogBatch) -> bool:
        return True

    def flush(self, timeout_s: float = 10.0) -> bool:
        return True

    @property
    def queue_depth(self) -> int:
        return 0


class NullMetrics:
    """Records nothing."""

    def observe_prediction(
        self,
        endpoint: str,
        rows: int,
        label_counts: Mapping[str | None, int],
        abstain_reasons: Mapping[str | None, int] | None = None,
        stage_seconds: Mapping[str, float] | None = None,
        *,
        total_seconds: float | None = None,
        guardrail_actions: Mapping[str, int] | None = None,
        prediction_set_size_counts: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        pass

    def observe_request(
        self,
        endpoint: str,
        total_seconds: float,
        stage_seconds: Mapping[str, float] | None = None,
    ) -> None:
        pass

    def observe_report(self, categories: Iterable[str] = ()) -> None:
        pass

    def set_model_version(
        self, pack: str, version: str, provider: str = "unknown"
    ) -> None:
        pass

    def set_policy_version(self, version: str) -> None:
        pass

    def set_follow_failing(self, failing: bool) -> None:
        pass

    def set_estimated_priors(self, priors: Mapping[str, float]) -> None:
        pass

    def set_log_queue_rows(self, rows: int) -> None:
        pass
