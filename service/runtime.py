"""Everything one worker serves with, wired from `Settings`: pack, guardrails, batcher,
prediction log, metrics, and the watcher that follows promotions and policy reloads.

The served model and policy live in one immutable `Served` object that is replaced
by assignment: a request reads it once and finishes with the versions it started
with, so a swap never drops or mixes in-flight requests. Promotions and policy
reloads are written to `state_file`; every worker polls it and swaps, so all
workers follow an admin call that reached only one of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import Conflict, Unauthorized, Unprocessable
from feedback.log_batch import LogBatch
from feedback.models import new_prediction_ids
from guardrails.online_priors import OnlinePriorEstimator
from guardrails.pipeline import GuardedBatch, GuardrailPipeline, RequestContext
from guardrails.policy import Policy
from packs.errors import PackError
from packs.loader import ModelPack, load_table
from service.batching import ModelBatcher
from service.decode import decode_features
from service.rate_limit import RateLimiter
from service.schemas import PredictRequest
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """The model pack and policy answering requests, swapped as one unit."""

    pack: ModelPack
    policy: Policy
    policy_path: Path
    pipeline: GuardrailPipeline
    estimator: OnlinePriorEstimator | None

    @property
    def versions(self) -> tuple[str, str]:
        return self.pack.metadata.version, self.pipeline.policy_version

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.pack.metadata.feature_names)

    @cached_property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.pack.metadata.labels)


def read_state(state_file: Path) -> dict[str, str]:
    """The promoted pack dir and policy path, if any were promoted."""
    try:
        return json.loads(state_file.read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return {}


def write_state(state_file: Path, **changes: str) -> None:
    """Atomically record a promotion or a policy change for every worker."""
    state = read_state(state_file) | changes
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, state_file)


STAGES = ("validation", "inference", "guardrails", "encoding", "logging")


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Any = None,
        session_factory: Any = None,
        prediction_log: Any = None,
    ):
        self.settings = settings
        self.metrics = metrics
        self.session_factory = session_factory
        self.prediction_log = prediction_log
        self.report_limiter = RateLimiter(
            per_minute=settings.feedback.report_rate_per_minute
        )
        # A report may name a prediction still queued in a worker's write-behind log.
        self.report_lookup_wait_s = settings.feedback.log_flush_interval_ms / 1000 / 2
        self.report_lookup_retries = 6
        state = read_state(settings.state_file)
        self.served = self.load_served(
            Path(state.get("pack_dir", settings.active_pack_dir)),
            Path(state.get("policy_path", settings.guardrails.policy_path)),
        )
        self._state_mtime = self._mtime()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.drift: Any = None  # the drift schedule, in one worker only
        self.batcher = self._make_batcher()
        self._set_version_metrics(self.served)

    # ---- building and swapping what is served ----

    def load_served(self, pack_dir: Path, policy_path: Path) -> Served:
        serving = self.settings.serving
        pack = ModelPack.load(
            pack_dir,
            providers=serving.providers,
            require_gpu=serving.require_gpu,
            intra_op_threads=serving.intra_op_threads,
        )
        return self.with_policy(pack, policy_path)

    def with_policy(self, pack: ModelPack, policy_path: Path) -> Served:
        policy = Policy.load(policy_path)
        reference = None
        if policy.priors.online.enabled:
            names = pack.metadata.feature_names
            table = load_table(pack.reference_path())
            reference = pack.predict_proba(table[names].to_numpy(dtype=np.float32))
        estimator = OnlinePriorEstimator.from_policy(policy, pack.metadata, reference)
        pipeline = GuardrailPipeline(policy, pack.metadata, prior_estimator=estimator)
        return Served(
            pack=pack,
            policy=policy,
            policy_path=policy_path,
            pipeline=pipeline,
            estimator=estimator,
        )

    def swap(self, served: Served) -> None:
        old = self.served
        self.served = served
        if self.batcher is not None:
            self.batcher = self._make_batcher()
        self._set_version_metrics(served)
        log.info(
            "now serving %s with policy %s (was %s)", *served.versions, old.versions
        )

    def attach(self, *, metrics: Any, prediction_log: Any) -> None:
        """Add the parts that need the loaded pack (metric label sets) to exist."""
        self.metrics = metrics
        self.prediction_log = prediction_log
        self._set_version_metrics(self.served)

    def _set_version_metrics(self, served: Served) -> None:
        if self.metrics is not None:
            self.metrics.set_model_version(
                served.pack.metadata.name, served.versions[0], served.pack.provider
            )
            self.metrics.set_policy_version(served.versions[1])

    def replace_policy(self, yaml_text: str) -> Served:
        """Validate a new policy against the served pack and serve it everywhere.

        Anything wrong raises `PolicyInvalid` (422) and the old policy stays.
        """
        policy = Policy.from_yaml(yaml_text)
        current = self.served
        policy.check_against(current.pack.metadata)
        digest = hashlib.sha256(yaml_text.encode()).hexdigest()[:12]
        path = self.settings.data_dir / "policies" / f"{digest}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml_text)
        served = self.with_policy(current.pack, path)
        write_state(self.settings.state_file, policy_path=str(path))
        self._state_mtime = self._mtime()
        self.swap(served)
        return served

    def promote_pack(self, pack_dir: Path) -> Served:
        """Serve `pack_dir` with the current policy in every worker (no gate here)."""
        current = self.served
        served = self.load_served(pack_dir, current.policy_path)
        write_state(self.settings.state_file, pack_dir=str(pack_dir))
        self._state_mtime = self._mtime()
        self.swap(served)
        return served

    def promote(
        self, pack_dir: str | Path, *, max_metric_drop: float | None = None
    ) -> dict[str, Any]:
        """Serve a candidate pack if the regression gate passes; else 409."""
        from feedback.promotion import (
            PacksIncompatible,
            judge_candidate,
            record_promotion,
        )

        candidate = Path(pack_dir).resolve()
        try:
            ModelPack.load(candidate, providers=["CPUExecutionProvider"])
        except PackError as exc:
            raise Unprocessable(
                f"candidate pack is not loadable: {exc.message}", field="pack_dir"
            ) from None
        current = self.served
        gate = self.settings.feedback
        with self.sessions() as session:
            try:
                judgement = judge_candidate(
                    session,
                    candidate_dir=candidate,
                    baseline_dir=current.pack.path,
                    policy_path=current.policy_path,
                    max_newly_broken=gate.gate_max_newly_broken,
                    max_metric_drop=gate.gate_max_metric_drop
                    if max_metric_drop is None
                    else max_metric_drop,
                    out_dir=self.settings.regression_dir,
                )
            except PacksIncompatible as exc:
                raise Unprocessable(str(exc), field="pack_dir") from None
            summary = {
                "candidate_version": judgement.candidate_version,
                "baseline_version": judgement.baseline_version,
                "run_id": judgement.report.run_id,
                "gate_passed": judgement.decision.passed,
                "reasons": judgement.decision.reasons,
                "regression": judgement.report.summary(),
            }
            if not judgement.decision.passed:
                raise Conflict(
                    "the promotion gate refused the candidate: "
                    + "; ".join(judgement.decision.reasons),
                    field="pack_dir",
                    gate=summary,
                )
            served = self.promote_pack(candidate)
            meta = served.pack.metadata
            assert judgement.report.run_id is not None
            record_promotion(session, meta, run_id=judgement.report.run_id)
        return {"promoted": True, "model_version": meta.version, **summary}

    def _make_batcher(self) -> ModelBatcher | None:
        mode = self.settings.serving.batching
        on_gpu = self.served.pack.provider == "CUDAExecutionProvider"
        if mode == "off" or (mode == "auto" and not on_gpu):
            return None
        return ModelBatcher(
            self.served.pack.predict_proba,
            max_batch_rows=self.settings.serving.max_batch_rows,
        )

    def _mtime(self) -> float:
        try:
            return self.settings.state_file.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def follow_state(self) -> bool:
        """Swap to the promoted pack/policy if `state_file` changed; True if swapped."""
        mtime = self._mtime()
        if mtime == self._state_mtime:
            return False
        self._state_mtime = mtime
        state = read_state(self.settings.state_file)
        pack_dir = Path(state.get("pack_dir", self.settings.active_pack_dir))
        policy_path = Path(
            state.get("policy_path", self.settings.guardrails.policy_path)
        )
        current = self.served
        if pack_dir == current.pack.path and policy_path == current.policy_path:
            return False
        try:
            if pack_dir == current.pack.path:
                served = self.with_policy(current.pack, policy_path)
            else:
                served = self.load_served(pack_dir, policy_path)
        except Exception:
            log.exception(
                "could not follow %s; still serving %s", state, current.versions
            )
            return False
        self.swap(served)
        return True

    # ---- feedback ----

    @contextmanager
    def sessions(self) -> Iterator[Any]:
        if self.session_factory is None:
            raise RuntimeError("no database configured")
        with self.session_factory() as session:
            yield session

    def flush_prediction_log(self) -> None:
        if self.prediction_log is not None:
            self.prediction_log.flush(timeout_s=2.0)

    def observe_report(self, categories: list[str], *, created: bool) -> None:
        if self.metrics is not None and created:
            self.metrics.observe_report(categories)

    def prior_estimate(self) -> dict[str, Any]:
        served = self.served
        estimator = served.estimator
        labels = served.pack.metadata.labels
        if estimator is None:
            return {
                "enabled": False,
                "used": False,
                "priors": served.pack.metadata.training_priors,
                "reason": "online prior estimation is off in the policy",
            }
        return {"enabled": True, **estimator.current().to_dict(labels)}

    # ---- the hot path ----

    def authorize_client(self, authorization: str | None) -> None:
        key = self.settings.security.api_key
        if key is not None and not bearer_matches(
            authorization, key.get_secret_value()
        ):
            raise Unauthorized(
                "missing or wrong API key: send Authorization: Bearer <key>"
            )

    async def predict(
        self, request: PredictRequest, *, validation_s: float
    ) -> dict[str, Any]:
        served = self.served
        meta = served.pack.metadata
        t0 = time.perf_counter()
        x = decode_features(
            request, meta.feature_names, max_rows=self.settings.serving.max_request_rows
        )
        ctx = RequestContext(context=request.context, priors=request.priors)
        t1 = time.perf_counter()
        if self.batcher is not None:
            probs = await self.batcher.predict(x)
            inference_s = time.perf_counter() - t1
            batch = served.pipeline.run(x, lambda _x: probs, ctx)
        else:
            timer = _Timed(served.pack.predict_proba)
            batch = served.pipeline.run(x, timer, ctx)
            inference_s = timer.seconds
        t2 = time.perf_counter()
        n = len(x)
        ids = new_prediction_ids(n)
        if request.answers_in_columns:
            answer = _columns_answer(ids, batch, served)
        else:
            answer = _rows_answer(ids, batch, served)
        t3 = time.perf_counter()
        if self.prediction_log is not None:
            self.prediction_log.submit_batch(
                log_batch(ids, batch, x, request.context, served)
            )
        t4 = time.perf_counter()
        if self.metrics is not None:
            self.metrics.observe_prediction(
                "predict",
                n,
                Counter(batch.labels),
                Counter(batch.reasons) if batch.abstained.any() else None,
                {
                    "validation": validation_s + (t1 - t0),
                    "inference": inference_s,
                    "guardrails": t2 - t1 - inference_s,
                    "encoding": t3 - t2,
                    "logging": t4 - t3,
                },
                total_seconds=validation_s + (t4 - t0),
                guardrail_actions=batch.acted_counts(),
            )
        return answer

    def info(self) -> dict[str, Any]:
        served = self.served
        meta = served.pack.metadata
        return {
            "model_name": meta.name,
            "model_version": meta.version,
            "policy_version": served.pipeline.policy_version,
            "labels": meta.labels,
            "features": [f.model_dump() for f in meta.input.features],
            "provider": served.pack.provider,
            "guardrail_stages": served.pipeline.stage_names(),
            "contexts": sorted(served.policy.priors.contexts),
        }

    # ---- background work ----

    def start_background(self) -> None:
        self._spawn(
            "state-watcher", self.settings.serving.reload_poll_s, self.follow_state
        )
        self._spawn("priors-refresh", self._priors_interval_s, self._refresh_priors)
        self._spawn("log-depth", 1.0, self._export_log_depth)
        self._spawn(
            "retention", self.settings.feedback.retention_check_s, self.purge_expired
        )

    def purge_expired(self) -> int:
        """Delete logged predictions older than the policy's retention (if set)."""
        from feedback import store

        days = self.served.policy.log_retention_days
        if days is None or self.session_factory is None:
            return 0
        with self.sessions() as session:
            return store.purge_predictions_older_than(session, days)

    def _priors_interval_s(self) -> float:
        return self.served.policy.priors.online.refresh_interval_s

    def _refresh_priors(self) -> None:
        if self.served.estimator is not None:
            self.served.estimator.refresh()
            if self.metrics is not None:
                self.metrics.set_estimated_priors(self.prior_estimate()["priors"])

    def _export_log_depth(self) -> None:
        if self.metrics is not None and self.prediction_log is not None:
            self.metrics.set_log_queue_rows(self.prediction_log.queue_depth)

    def _spawn(self, name: str, interval_s: float | Any, fn: Any) -> None:
        """Run `fn` every `interval_s` seconds (a number, or a callable giving one)."""

        def loop() -> None:
            while not self._stop.wait(
                interval_s() if callable(interval_s) else interval_s
            ):
                try:
                    fn()
                except Exception:
                    log.exception("%s failed", name)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        if self.drift is not None:
            self.drift.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.prediction_log is not None:
            self.prediction_log.close(timeout_s=10)
        if hasattr(self.metrics, "stop"):  # a MetricsBuffer: apply what is pending
            self.metrics.stop()


class _Timed:
    """Wrap the model call so its time can be told apart from the guardrails'."""

    __slots__ = ("fn", "seconds")

    def __init__(self, fn: Any):
        self.fn = fn
        self.seconds = 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return self.fn(x)  # type: ignore[no-any-return]
        finally:
            self.seconds = time.perf_counter() - start


def _rows_answer(ids: list[str], batch: GuardedBatch, served: Served) -> dict[str, Any]:
    """`{"predictions": [one object per row]}`."""
    model_version, policy_version = served.versions
    labels = served.label_names
    probabilities = batch.probabilities.tolist()
    abstained = batch.abstained.tolist()
    traces = batch.traces
    return {
        "predictions": [
            {
                "prediction_id": ids[i],
                "label": batch.labels[i],
                "abstained": abstained[i],
                "reason": batch.reasons[i],
                "probabilities": dict(zip(labels, probabilities[i], strict=True)),
                "model_version": model_version,
                "policy_version": policy_version,
                "trace": traces[i],
            }
            for i in range(len(ids))
        ]
    }


def _columns_answer(
    ids: list[str], batch: GuardedBatch, served: Served
) -> dict[str, Any]:
    """One list per field and one per label; the trace per stage as one entry for
    all rows but those it lists (see `ColumnsPredictResponse`). No per-row objects:
    orjson writes the numpy columns directly."""
    model_version, policy_version = served.versions
    by_label = np.ascontiguousarray(batch.probabilities.T)
    return {
        "model_version": model_version,
        "policy_version": policy_version,
        "columns": {
            "prediction_id": ids,
            "label": batch.labels,
            "abstained": batch.abstained,
            "reason": batch.reasons,
            "probabilities": dict(zip(served.label_names, by_label, strict=True)),
        },
        "trace": [column.to_dict() for column in batch.trace_columns],
    }


def log_batch(
    ids: list[str],
    batch: GuardedBatch,
    x: np.ndarray,
    context: str | None,
    served: Served,
) -> LogBatch:
    """What the prediction log keeps of one answered request."""
    return LogBatch(
        ids=ids,
        created_at=datetime.now(UTC),
        model_version=served.versions[0],
        policy_version=served.versions[1],
        context=context,
        labels=batch.labels,
        abstained=batch.abstained,
        reasons=batch.reasons,
        probabilities=batch.probabilities,
        inputs=x if served.policy.store_inputs else None,
        traces=_logged_traces(batch),
        feature_names=served.feature_names,
        label_names=served.label_names,
    )


def _logged_traces(batch: GuardedBatch) -> list[Any] | None:
    """The trace of each row on which a guardrail acted; None for the others
    (what quiet stages do follows from the policy version)."""
    acted = batch.acted_mask()
    if not acted.any():
        return None
    traces = batch.traces
    if acted.all():
        return traces
    return [t if a else None for t, a in zip(traces, acted.tolist(), strict=True)]


def bearer_matches(authorization: str | None, secret: str) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization[7:].encode(), secret.encode())
