"""The data plane: the transport-agnostic core every route adapts to.

    predict(request)            rows -> guardrail pipeline around the model ->
                                answer (rows or columns); logged, counted, then
                                offered to the shadow sink (sampled, queued)
    report(data, key, client)   a bad-result report, durable before it returns

Routes only decode a request, call one of these and encode the result. The served
pack and policy come from `ServedState`; the prediction log, the metrics and the
store are required collaborators (null objects where a caller wants none).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from common.errors import Unprocessable
from feedback import store
from feedback.db import SessionFactory
from feedback.idempotency import IdempotencyKey
from feedback.log_batch import answered_batch
from feedback.log_reader import PredictionLogReader
from feedback.models import new_prediction_id_block
from feedback.schemas import ReportCreate, ReportPublic
from guardrails.batch import RequestContext
from guardrails.rowwise import row_count
from service.batching import ModelBatcher
from service.decode import decode_features
from service.encoding import columns_answer, rows_answer
from service.rate_limit import RateLimiter
from service.schemas import PredictRequest
from service.served import Served, ServedState
from service.settings import Settings
from service.shadow import ShadowSink
from service.sinks import MetricsSink, PredictionSink

log = logging.getLogger(__name__)

PHASES = ("validation", "inference", "guardrails", "encoding", "logging")
"""The parts of a prediction request whose time is measured (metric labels)."""


class DataPlane:
    def __init__(
        self,
        settings: Settings,
        served: ServedState,
        *,
        prediction_log: PredictionSink,
        log_reader: PredictionLogReader,
        metrics: MetricsSink,
        sessions: SessionFactory,
        shadow: ShadowSink,
    ):
        self.served = served
        self.shadow = shadow
        self.prediction_log = prediction_log
        self.log_reader = log_reader
        self.metrics = metrics
        self.sessions = sessions
        self._max_rows = settings.serving.max_request_rows
        self._batching = settings.serving.batching
        self._max_batch_rows = settings.serving.max_batch_rows
        self._report_limiter = RateLimiter(
            per_minute=settings.feedback.report_rate_per_minute
        )
        self._batcher: ModelBatcher | None = None
        served.subscribe(self._on_swap)

    def _on_swap(self, served: Served) -> None:
        on_gpu = served.pack.provider == "CUDAExecutionProvider"
        batching = self._batching == "on" or (self._batching == "auto" and on_gpu)
        self._batcher = (
            ModelBatcher(served.pack.predict_proba, max_batch_rows=self._max_batch_rows)
            if batching
            else None
        )

    async def predict(
        self, request: PredictRequest, *, parse_s: float = 0.0
    ) -> dict[str, Any]:
        """Answer one request; `parse_s` is the caller's time spent parsing it.

        The answer is returned only once the prediction log has its rows (the
        log raises `PredictionLogUnavailable`, a 503, when it cannot take them)."""
        served, batcher = self.served.current, self._batcher
        t0 = time.perf_counter()
        x = decode_features(request, served.meta.feature_names, max_rows=self._max_rows)
        ctx = RequestContext(context=request.context, priors=request.priors)
        t1 = time.perf_counter()
        pending = served.pipeline.prepare(x, ctx)
        t2 = time.perf_counter()
        if batcher is not None:
            probabilities = await batcher.predict(x)
        else:
            probabilities = served.pack.predict_proba(x)
        t3 = time.perf_counter()
        batch = served.pipeline.finish(pending, probabilities)
        t4 = time.perf_counter()
        ids, ids_hex = new_prediction_id_block(len(x))
        encode = columns_answer if request.answers_in_columns else rows_answer
        answer = encode(ids, batch, served.label_names, served.versions)
        t5 = time.perf_counter()
        self.prediction_log.submit_batch(
            answered_batch(
                ids,
                batch,
                x,
                context=request.context,
                versions=served.versions,
                store_inputs=served.policy.store_inputs,
                feature_names=served.feature_names,
                label_names=served.label_names,
                ids_hex=ids_hex,
            )
        )
        t6 = time.perf_counter()
        self.metrics.observe_prediction(
            "predict",
            len(x),
            batch.label_counts(served.label_names),
            batch.reason_counts() if batch.abstained.any() else None,
            {
                "validation": parse_s + (t1 - t0),
                "inference": t3 - t2,
                "guardrails": (t2 - t1) + (t4 - t3),
                "encoding": t5 - t4,
                "logging": t6 - t5,
            },
            total_seconds=parse_s + (t6 - t0),
            guardrail_actions=batch.acted_counts(),
            prediction_set_size_counts=(
                None
                if batch.prediction_sets is None
                else np.bincount(row_count(batch.prediction_sets))
            ),
        )
        # After the answer is built: the sink only samples and enqueues.
        self.shadow.offer(served, x, ctx, ids, batch)
        return answer

    def report(
        self,
        data: ReportCreate,
        *,
        idempotency_key: str | None,
        client: str,
        scope: str,
    ) -> tuple[ReportPublic, bool]:
        """Store a report (committed before returning): (report, created).

        `client` is who the report counts against for the rate limit; `scope`
        is whose idempotency keys it may replay (see `feedback.idempotency`).
        """
        started = time.perf_counter()
        self._report_limiter.check(client)
        served = self.served.current
        # The key is bound to the body as sent, before inputs may be dropped.
        key = (
            None
            if idempotency_key is None
            else IdempotencyKey.of(idempotency_key, scope=scope, body=data)
        )
        data = _as_stored(data, served)
        # The row of an answered prediction is in the log before its answer was
        # sent (whichever worker answered): no waiting, no retries.
        public, created = self._store_report(data, key, served)
        if created:
            self.metrics.observe_report(public.categories)
        self.metrics.observe_request("report", time.perf_counter() - started)
        return public, created

    def _store_report(
        self, data: ReportCreate, key: IdempotencyKey | None, served: Served
    ) -> tuple[ReportPublic, bool]:
        model_version, policy_version = served.versions
        with self.sessions() as session:
            row, created = store.create_report(
                session,
                data=data,
                labels=served.meta.labels,
                idempotency=key,
                find_prediction=lambda pid: store.get_prediction(self.log_reader, pid),
                default_model_version=model_version,
                default_policy_version=policy_version,
            )
            return ReportPublic.from_row(row), created

    def info(self) -> dict[str, Any]:
        """What is served: versions, labels, features, provider, stages."""
        served = self.served.current
        meta = served.meta
        return {
            "model_name": meta.name,
            "model_version": meta.version,
            "policy_version": served.pipeline.policy_version,
            "labels": meta.labels,
            "features": [f.model_dump() for f in meta.input.features],
            "provider": served.pack.provider,
            "guardrail_stages": served.pipeline.stage_names(),
            "contexts": served.policy.contexts,
            # What the deployment's row names but this worker could not load
            # (it keeps serving the versions above); null when in step.
            "follow_failure": (
                failure.to_dict()
                if (failure := self.served.follow_failure) is not None
                else None
            ),
        }

    def prior_estimate(self) -> dict[str, Any]:
        """The online prior estimate, or the training priors when it is off."""
        served = self.served.current
        if served.estimator is None:
            return {
                "enabled": False,
                "used": False,
                "priors": served.meta.training_priors,
                "reason": "online prior estimation is off in the policy",
            }
        estimate = served.estimator.current()
        return {"enabled": True, **estimate.to_dict(served.meta.labels)}


def _as_stored(data: ReportCreate, served: Served) -> ReportCreate:
    """A direct report's inputs checked against the pack's features; dropped when
    the policy forbids keeping measurements (as the prediction log does)."""
    if data.inputs is None:
        return data
    names = served.meta.feature_names
    unknown = sorted(set(data.inputs) - set(names))
    if unknown:
        raise Unprocessable(
            f"inputs has unknown features {unknown}; allowed: {names}",
            field=f"inputs.{unknown[0]}",
        )
    if not served.policy.store_inputs:
        return data.model_copy(update={"inputs": None})
    return data
