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
from feedback.gate import ShadowRules
from feedback.log_reader import PredictionLogReader
from feedback.prediction_log import PredictionLog, WriterOptions
from feedback.promotion import Promoter, record_served
from feedback.windowed_job import OncePerWindow
from guardrails.registry import ABSTAIN_REASONS, STAGE_NAMES
from monitoring.drift_schedule import DriftSchedule
from monitoring.metrics import ServiceMetrics
from monitoring.metrics_buffer import MetricsBuffer
from packs.model_store import PackStore
from service.access import Access
from service.dataplane import PHASES, DataPlane
from service.jobs import Jobs
from service.review_sampling import REVIEW_JOB, ReviewSampling
from service.served import Served, ServedState
from service.settings import Settings
from service.shadow import ShadowRunner
from service.sinks import MetricsSink, NullMetrics, NullPredictionLog, PredictionSink
from service.worker import Worker

log = logging.getLogger(__name__)

#: Lease name of the scheduled drift run (the retraining trigger runs inside it).
DRIFT_JOB = "drift"


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


def writer_options(settings: Settings) -> WriterOptions:
    """The prediction-log writer's options from the settings."""
    s = settings.prediction_log
    return WriterOptions(
        fsync_interval_s=s.fsync_interval_s,
        rotate_bytes=s.rotate_bytes,
        rotate_age_s=s.rotate_age_s,
        on_slow_storage=s.on_slow_storage,
        max_wait_s=s.max_wait_s,
        sample_rate=s.sample_rate,
        compact=s.compact,
        row_group_rows=s.row_group_rows,
        compaction_nice=s.compaction_nice,
        compaction_process=s.compaction_process,
    )


def shadow_rules(settings: Settings) -> ShadowRules:
    """The promotion gate's shadow rule from the settings."""
    f = settings.feedback
    return ShadowRules(
        min_rows=f.gate_shadow_min_rows,
        accuracy_margin=f.gate_shadow_accuracy_margin,
        min_confident_agreement=f.gate_shadow_min_confident_agreement,
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
    log_settings = settings.prediction_log
    if log_predictions:
        writer = PredictionLog(
            settings.prediction_log_dir,
            writer_options(settings),
            on_written=service_metrics.add_log_written,
            on_refused=service_metrics.add_log_refused,
        ).start()
        prediction_log = writer
        closers.insert(0, lambda: writer.close(timeout_s=10))
    service_metrics.set_log_sample_rate(log_settings.sample_rate)
    log_reader = PredictionLogReader(
        settings.prediction_log_dir, sample_rate=log_settings.sample_rate
    )
    served.subscribe(lambda now: _export_versions(metrics, now))
    served.on_follow(lambda failure: metrics.set_follow_failing(failure is not None))
    metrics.set_follow_failing(False)
    shadow = ShadowRunner(settings, served, store, sessions).start()
    closers.insert(0, shadow.stop)
    dataplane = DataPlane(
        settings,
        served,
        prediction_log=prediction_log,
        log_reader=log_reader,
        metrics=metrics,
        sessions=sessions,
        shadow=shadow,
    )
    promoter = Promoter(
        sessions,
        served,
        store,
        max_newly_broken=settings.feedback.gate_max_newly_broken,
        max_metric_drop=settings.feedback.gate_max_metric_drop,
        out_dir=settings.regression_dir,
        deployment=settings.deployment.name,
        shadow_rules=shadow_rules(settings),
    )
    jobs = Jobs(
        settings,
        served,
        prediction_log=prediction_log,
        log_reader=log_reader,
        metrics=metrics,
        sessions=sessions,
    ).start()
    closers.insert(0, jobs.stop)
    if schedule_drift:
        closers.insert(0, _schedule_review(settings, sessions, log_reader))
    if schedule_drift and settings.monitoring.drift_interval_s > 0:
        closers[:0] = _schedule_drift(settings, sessions, served)
    _record_served(sessions, served.current)
    return Worker(
        settings=settings,
        served=served,
        dataplane=dataplane,
        promoter=promoter,
        access=Access(settings.security),
        sessions=sessions,
        shadow=shadow,
        closers=[*closers, engine.dispose],
    )


def _schedule_drift(
    settings: Settings, sessions: SessionFactory, served: ServedState
) -> list[Callable[[], object]]:
    """Drift runs once per interval across every replica on this store (a lease
    per window); returns the closers, in order."""
    drift = DriftSchedule(
        settings.monitoring, settings.drift_target, lambda: served.pack_dir
    )
    interval_s = settings.monitoring.drift_interval_s
    window = OncePerWindow(
        sessions,
        DRIFT_JOB,
        interval_s=interval_s,
        ttl_s=settings.leases.ttl_s,
        poll_s=min(settings.leases.poll_s, interval_s),
    )
    window.start(drift.run_once, on_lost=drift.cancel_run)
    return [drift.stop, window.stop]


def _schedule_review(
    settings: Settings, sessions: SessionFactory, log_reader: PredictionLogReader
) -> Callable[[], object]:
    """Review sampling once per interval across every replica on this store;
    returns its closer."""
    interval_s = settings.feedback.review_interval_s
    window = OncePerWindow(
        sessions,
        REVIEW_JOB,
        interval_s=interval_s,
        ttl_s=settings.leases.ttl_s,
        poll_s=min(settings.leases.poll_s, interval_s),
    )
    return ReviewSampling(settings.feedback, sessions, log_reader, window).start().stop


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
