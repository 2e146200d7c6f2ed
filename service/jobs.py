"""A worker's periodic background jobs, each a daemon thread on its own interval:

    state-watcher    follow promotions and policy changes made in other workers
    priors-refresh   re-run EM over the online prior window (off the request path)
    log-depth        export the prediction log's queue depth
    retention        delete logged predictions older than the policy or settings allow

A job that fails is logged and runs again at its next interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from feedback import store
from feedback.db import SessionFactory
from feedback.log_reader import PredictionLogReader
from service.served import ServedState
from service.settings import Settings
from service.sinks import MetricsSink, PredictionSink

log = logging.getLogger(__name__)


class Jobs:
    def __init__(
        self,
        settings: Settings,
        served: ServedState,
        *,
        prediction_log: PredictionSink,
        log_reader: PredictionLogReader,
        metrics: MetricsSink,
        sessions: SessionFactory,
    ):
        self.settings = settings
        self.served = served
        self.prediction_log = prediction_log
        self.log_reader = log_reader
        self.metrics = metrics
        self.sessions = sessions
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Jobs:
        serving, feedback = self.settings.serving, self.settings.feedback
        self._every("state-watcher", lambda: serving.reload_poll_s, self.served.follow)
        self._every("priors-refresh", self._priors_interval_s, self.refresh_priors)
        self._every("log-depth", lambda: 1.0, self.export_log_depth)
        self._every("retention", lambda: feedback.retention_check_s, self.purge_expired)
        return self

    def refresh_priors(self) -> None:
        served = self.served.current
        if served.estimator is not None:
            estimate = served.estimator.refresh()
            labels = served.meta.labels
            self.metrics.set_estimated_priors(estimate.to_dict(labels)["priors"])

    def export_log_depth(self) -> None:
        self.metrics.set_log_queue_rows(self.prediction_log.queue_depth)

    def purge_expired(self) -> int:
        """Delete logged predictions older than the retention (the policy's or the
        settings', the shorter) and beyond the settings' byte bound."""
        limits = self.settings.prediction_log
        ages = [
            d
            for d in (
                self.served.current.policy.log_retention_days,
                limits.retention_days,
            )
            if d is not None
        ]
        if not ages and limits.retention_bytes is None:
            return 0
        return store.purge_predictions_older_than(
            self.log_reader,
            min(ages) if ages else None,
            max_bytes=limits.retention_bytes,
        )

    def _priors_interval_s(self) -> float:
        return self.served.current.policy.priors.online.refresh_interval_s

    def _every(
        self, name: str, interval_s: Callable[[], float], job: Callable[[], object]
    ) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s()):
                try:
                    job()
                except Exception:
                    log.exception("%s failed", name)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
