"""Build a worker's `Runtime` from settings: the one place components are wired."""

from __future__ import annotations

import logging

from feedback.db import make_engine, migrate, session_factory
from feedback.prediction_log import PredictionLog
from feedback.promotion import record_served
from monitoring.metrics import ServiceMetrics
from monitoring.metrics_buffer import MetricsBuffer
from service.drift_schedule import DriftSchedule
from service.runtime import STAGES, Runtime
from service.settings import Settings

log = logging.getLogger(__name__)


def build_metrics(labels: list[str], features: list[str]) -> ServiceMetrics:
    # Under BentoML every worker writes multiprocess files that /metrics sums; the
    # registry only matters outside it (see monitoring.metrics).
    return ServiceMetrics(labels=labels, stages=STAGES, features=features)


def build_runtime(settings: Settings, *, schedule_drift: bool = True) -> Runtime:
    """Everything one worker needs; `schedule_drift` in one worker only."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    if settings.feedback.migrate_on_start:
        migrate(engine)
    runtime = Runtime(settings, session_factory=session_factory(engine))
    meta = runtime.served.pack.metadata
    metrics = build_metrics(meta.labels, meta.feature_names)
    feedback = settings.feedback
    prediction_log = PredictionLog(
        engine,
        max_queue_rows=feedback.log_queue_rows,
        batch_rows=feedback.log_batch_rows,
        flush_interval_ms=feedback.log_flush_interval_ms,
        on_drop=metrics.add_log_dropped,
        on_flush=lambda rows, _seconds: metrics.add_log_written(rows),
    ).start()
    runtime.attach(
        metrics=MetricsBuffer(metrics).start(), prediction_log=prediction_log
    )
    try:
        with runtime.sessions() as session:
            record_served(session, meta)
    except Exception:  # another worker racing on the same row; not worth a crash
        log.warning("could not record served model version", exc_info=True)
    runtime.start_background()
    if schedule_drift:
        runtime.drift = DriftSchedule(settings, lambda: runtime.served.pack.path)
        runtime.drift.start()
    return runtime
