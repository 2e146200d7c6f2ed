"""Build one worker from settings: the one place components are wired.

In order: the store (migrated), the served pack and policy, the metrics (their
label sets come from the pack and the guardrail registry), the prediction log,
then the data plane, promotion and background jobs, each given every collaborator
it needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from feedback.categories import category_names
from feedback.db import SessionFactory, make_engine, migrate, session_factory
from feedback.prediction_log import PredictionLog
from feedback.promotion import Promoter, record_served
from guardrails.registry import ABSTAIN_REASONS, STAGE_NAMES
from monitoring.drift_schedule import DriftSchedule
from monitoring.metrics import ServiceMetrics
from monitoring.metrics_buffer import MetricsBuffer
from packs.model_store import PackStore
from service.access import Access
from service.dataplane import PHASES, DataPlane
from service.jobs import Jobs
from service.review_sampling import ReviewSampling
from service.served import Served, ServedState
from service.settings import Settings
from service.sinks import MetricsSink, NullMetrics, NullPredictionLog, PredictionSink
from service.worker import Worker

log = logging.getLogger(__name__)


def build_metrics(
    served: Served, *, report_categories: list[str] | None = None
) -> ServiceMetrics:
    """The service's metrics for what is served. Under BentoML every worker writes
    multiprocess files that /metrics sums (see monitoring.metrics). Report
    categories are the managed list as the worker starts; others count as `other`."""
    meta = served.meta
    return ServiceMetrics(
        labels=meta.labels,
        stages=PHASES,
        guardrail_stages=STAGE_NAMES,
        abstain_reasons=ABSTAIN_REASONS,
        report_categories=report_categories or (),
    )


def pack_store(settings: Settings) -> PackStore:
    """Under a BentoML server, BentoML's own model store (`$BENTOML_HOME/models`,
    which `service.cli serve` puts under the data dir, or a built bento's models);
    in-process, the store under the data dir."""
    import bentoml

    if bentoml.server_context.worker_index is not None:
        return PackStore.configured()
    return PackStore.at(settings.model_store_dir)


def _category_names(sessions: SessionFactory) -> list[str]:
    with sessions() as session:
        return category_names(session)


def build_worker(
    settings: Settings,
    *,
    schedule_drift: bool = True,
    log_predictions: bool = True,
    record_metrics: bool = True,
) -> Worker:
    """Everything one worker needs; `schedule_drift` in one worker only. The
    switches replace the prediction log or the metrics by null objects (load-test
    variants measure what each costs)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    if settings.feedback.migrate_on_start:
        migrate(engine)
    sessions = session_factory(engine)
    store = pack_store(settings)
    served = ServedState(settings, sessions=sessions, store=store)
    closers: list[Callable[[], object]] = []
    metrics: MetricsSink = NullMetrics()
    service_metrics = build_metrics(
        served.current, report_categories=_category_names(sessions)
    )
    if record_metrics:
        buffer = MetricsBuffer(service_metrics).start()
        metrics = buffer
        closers.append(buffer.stop)
    prediction_log: PredictionSink = NullPredictionLog()
    if log_predictions:
        feedback = settings.feedback
        writer = PredictionLog(
            engine,
            max_queue_rows=feedback.log_queue_rows,
            batch_rows=feedback.log_batch_rows,
            flush_interval_ms=feedback.log_flush_interval_ms,
            on_drop=service_metrics.add_log_dropped,
            on_flush=lambda rows, _seconds: service_metrics.add_log_written(rows),
        ).start()
        prediction_log = writer
        closers.insert(0, lambda: writer.close(timeout_s=10))
    served.subscribe(lambda now: _export_versions(metrics, now))
    dataplane = DataPlane(
        settings,
        served,
        prediction_log=prediction_log,
        metrics=metrics,
        sessions=sessions,
    )
    promoter = Promoter(
        sessions,
        served,
        store,
        max_newly_broken=settings.feedback.gate_max_newly_broken,
        max_metric_drop=settings.feedback.gate_max_metric_drop,
        out_dir=settings.regression_dir,
    )
    jobs = Jobs(
        settings,
        served,
        prediction_log=prediction_log,
        metrics=metrics,
        sessions=sessions,
    ).start()
    closers.insert(0, jobs.stop)
    if schedule_drift:
        drift = DriftSchedule(
            settings.monitoring, settings.drift_target, lambda: served.pack_dir
        )
        drift.start()
        closers.insert(0, drift.stop)
        sampling = ReviewSampling(settings.feedback, sessions).start()
        closers.insert(0, sampling.stop)
    _record_served(sessions, served.current)
    return Worker(
        settings=settings,
        served=served,
        dataplane=dataplane,
        promoter=promoter,
        access=Access(settings.security),
        sessions=sessions,
        closers=[*closers, engine.dispose],
    )


def _export_versions(metrics: MetricsSink, served: Served) -> None:
    model_version, policy_version = served.versions
    metrics.set_model_version(served.meta.name, model_version, served.pack.provider)
    metrics.set_policy_version(policy_version)


def _record_served(sessions: SessionFactory, served: Served) -> None:
    try:
        with sessions() as session:
            record_served(session, served.meta)
    except Exception:  # another worker racing on the same row; not worth a crash
        log.warning("could not record served model version", exc_info=True)
