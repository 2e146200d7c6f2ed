"""The shadow sink: a candidate pack answers a sampled share of live traffic off
the answer path, and its answers are compared with the served ones.

    offer(...)    called by the data plane after an answer is built: samples
                  rows and puts them on a bounded queue; a full queue drops
                  them (counted), so a request never waits for the candidate
    drain thread  takes sampled rows off the queue and runs them through the
                  candidate's own pipeline (`build_pipeline`, its pack's own
                  policy), tallying agreement (`feedback.shadow.ShadowTally`)
    follow thread polls the deployment's active shadow run in the SQL store and
                  loads or drops the candidate, and writes this worker's
                  tallies to the store, so a POST that reached one worker
                  starts the run in all of them and a GET sums them all

The admin calls (start, read, stop) are in `service.shadow_admin`.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from feedback import shadow as shadow_store
from feedback.db import SessionFactory
from feedback.shadow import ShadowRunRecord, ShadowTally
from guardrails.batch import RequestContext
from guardrails.build import build_pipeline
from guardrails.pipeline import GuardedBatch, GuardrailPipeline
from guardrails.policy import Policy
from packs.errors import PackPolicyMissing, PackTampered
from packs.loader import POLICY_FILE, ModelPack
from packs.model_store import PackStore, StoredPack
from service.served import Served, ServedState
from service.settings import Settings
from service.start import DEFAULT_PACK_NAME, DEFAULT_POLICY

log = logging.getLogger(__name__)


class ShadowSink(Protocol):
    """Where the data plane offers answered rows for a shadow run."""

    def offer(
        self,
        served: Served,
        features: np.ndarray,
        ctx: RequestContext,
        prediction_ids: Sequence[str],
        batch: GuardedBatch,
    ) -> None:
        """Take (some of) the rows, or none; never blocks, never raises."""
        ...


class NullShadow:
    """No shadow run: every offer is ignored."""

    def offer(
        self,
        served: Served,
        features: np.ndarray,
        ctx: RequestContext,
        prediction_ids: Sequence[str],
        batch: GuardedBatch,
    ) -> None:
        pass


@dataclass
class _Candidate:
    """The candidate of one run, loaded in this worker, and its tallies here."""

    run: ShadowRunRecord
    pack: ModelPack
    pipeline: GuardrailPipeline
    tally: ShadowTally = field(default_factory=ShadowTally)
    lock: threading.Lock = field(default_factory=threading.Lock)
    flushing: threading.Lock = field(default_factory=threading.Lock)
    changes: int = 0
    """Bumped by every count, so that a flush writes only what changed."""
    flushed: int = -1
    """`changes` as last written (-1: never, so a worker's first flush writes its
    row even before it counted anything)."""
    priors_refreshed_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class _Rows:
    candidate: _Candidate
    served: Served
    features: np.ndarray
    ctx: RequestContext
    prediction_ids: list[str]
    labels: list[str | None]
    probabilities: np.ndarray


DRAIN_WINDOW_S = 0.25
"""How long the drain lets sampled rows gather before scoring them together."""
DRAIN_MAX_REQUESTS = 256
"""Most queued requests scored in one round."""


def _batched(taken: list[_Rows]) -> list[_Rows]:
    """Queued requests joined into one batch per candidate, served pack and
    request context, in arrival order."""
    groups: dict[tuple[Any, ...], list[_Rows]] = {}
    for rows in taken:
        priors = rows.ctx.priors
        key = (
            id(rows.candidate),
            id(rows.served),
            rows.ctx.context,
            None if priors is None else tuple(sorted(priors.items())),
        )
        groups.setdefault(key, []).append(rows)
    out = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        head = group[0]
        out.append(
            _Rows(
                head.candidate,
                head.served,
                np.concatenate([g.features for g in group]),
                head.ctx,
                [i for g in group for i in g.prediction_ids],
                [label for g in group for label in g.labels],
                np.concatenate([g.probabilities for g in group]),
            )
        )
    return out


def candidate_policy(stored: StoredPack, pack_name: str) -> str:
    """The candidate pack's own policy text (the default policy for a default
    penguin pack built before packs carried one)."""
    own = stored.path / POLICY_FILE
    if own.is_file():
        return own.read_text(encoding="utf-8")
    if pack_name == DEFAULT_PACK_NAME:
        return DEFAULT_POLICY.read_text(encoding="utf-8")
    raise PackPolicyMissing(stored.tag, own)


class ShadowRunner:
    def __init__(
        self,
        settings: Settings,
        served: ServedState,
        store: PackStore,
        sessions: SessionFactory,
    ):
        self.settings = settings
        self.served = served
        self.store = store
        self.sessions = sessions
        self.deployment = settings.deployment.name
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._queue: queue.Queue[_Rows] = queue.Queue(
            settings.feedback.shadow_queue_requests
        )
        self._candidate: _Candidate | None = None
        self._switch = threading.Lock()
        self._failed_run: int | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._rng = np.random.default_rng()

    # --- the answer path -----------------------------------------------------

    def offer(
        self,
        served: Served,
        features: np.ndarray,
        ctx: RequestContext,
        prediction_ids: Sequence[str],
        batch: GuardedBatch,
    ) -> None:
        candidate = self._candidate
        if candidate is None:
            return
        try:
            self._offer(candidate, served, features, ctx, prediction_ids, batch)
        except Exception:
            # The answer is built already: a shadow fault must never fail it.
            log.exception("shadow sampling failed")

    def _offer(
        self,
        candidate: _Candidate,
        served: Served,
        features: np.ndarray,
        ctx: RequestContext,
        prediction_ids: Sequence[str],
        batch: GuardedBatch,
    ) -> None:
        rows = _sample(
            candidate, served, features, ctx, prediction_ids, batch, self._rng
        )
        if rows is None:
            return
        try:
            self._queue.put_nowait(rows)
        except queue.Full:
            with candidate.lock:
                candidate.tally.dropped += len(rows.prediction_ids)
                candidate.changes += 1

    # --- background ------------------------------------------------------------

    def start(self) -> ShadowRunner:
        for name, loop in (
            ("shadow-drain", self._drain),
            ("shadow-follow", self._poll),
        ):
            thread = threading.Thread(target=loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        candidate = self._candidate
        if candidate is not None:
            self._flush_safely(candidate)

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            # Let sampled rows gather, then score them in a few batched calls:
            # one pipeline call per request would hold the interpreter lock
            # (which the answer path needs) far more often.
            self._stop.wait(DRAIN_WINDOW_S)
            taken = [first]
            while len(taken) < DRAIN_MAX_REQUESTS:
                try:
                    taken.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                for rows in _batched(taken):
                    try:
                        self.score(rows)
                    except Exception:
                        log.exception("shadow scoring failed")
            finally:
                for _ in taken:
                    self._queue.task_done()

    def _poll(self) -> None:
        poll_s = self.settings.serving.reload_poll_s
        flush_s = self.settings.feedback.shadow_flush_s
        flushed_at = time.monotonic()
        while not self._stop.wait(min(poll_s, flush_s)):
            try:
                self.follow()
                if time.monotonic() - flushed_at >= flush_s:
                    flushed_at = time.monotonic()
                    candidate = self._candidate
                    if candidate is not None:
                        self.flush(candidate)
            except Exception:
                log.exception("shadow follow failed")

    def score(self, rows: _Rows) -> None:
        """Run sampled rows through the candidate and count how it agrees."""
        if rows.candidate is not self._candidate:
            return  # the run stopped or changed while these rows waited
        score_rows(rows)

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is empty (tests and the benchmark)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def follow(self) -> None:
        """Load, swap or drop the candidate as the deployment's active run says."""
        with self._switch:
            with self.sessions() as session:
                run = shadow_store.active_run(session, self.deployment)
            current = self._candidate
            if current is not None and run is not None and current.run.id == run.id:
                self._refresh_priors(current)
                return
            if run is None:
                self._candidate = None
            else:
                try:
                    self._candidate = self._load(run)
                    self._failed_run = None
                except Exception:
                    if self._failed_run != run.id:  # once, not at every poll
                        log.exception(
                            "could not load shadow candidate %s", run.pack_tag
                        )
                    self._failed_run = run.id
                    self._candidate = None
            if current is not None:
                self._flush_safely(current)

    def _refresh_priors(self, candidate: _Candidate) -> None:
        """Re-run the candidate's online prior estimate at its policy's interval."""
        estimator = candidate.pipeline.prior_estimator
        if estimator is None:
            return
        interval_s = candidate.pipeline.policy.priors.online.refresh_interval_s
        if time.monotonic() - candidate.priors_refreshed_at >= interval_s:
            candidate.priors_refreshed_at = time.monotonic()
            estimator.refresh()

    def _load(self, run: ShadowRunRecord) -> _Candidate:
        stored = self.store.open(run.pack_tag)
        if stored.sha256 != run.pack_sha256:
            raise PackTampered(stored.tag, run.pack_sha256, stored.sha256)
        pack, pipeline = build_candidate(self.settings, stored, run.policy_yaml)
        return _Candidate(run, pack, pipeline)

    def flush(self, candidate: _Candidate) -> None:
        """Write this worker's tallies of the candidate's run, if they changed.

        Flushes of one candidate run one at a time (the follow thread and an
        admin request both flush): two interleaved could leave an older snapshot
        in the store, marked as written."""
        with candidate.flushing:
            with candidate.lock:
                if candidate.changes == candidate.flushed:
                    return
                changes, data = candidate.changes, candidate.tally.to_json()
            with self.sessions() as session:
                shadow_store.write_tally(session, candidate.run.id, self.worker, data)
            candidate.flushed = changes

    def _flush_safely(self, candidate: _Candidate) -> None:
        try:
            self.flush(candidate)
        except Exception:
            log.exception("could not write shadow tallies of run %s", candidate.run.id)

    def switch_to(self, candidate: _Candidate) -> None:
        """Serve `candidate` in this worker now (its run is in the store); the
        one it replaces has its last tallies written."""
        with self._switch:
            previous, self._candidate = self._candidate, candidate
        if previous is not None:
            self._flush_safely(previous)

    def flush_current(self) -> None:
        """This worker's latest tallies into the store, before reading them back."""
        candidate = self._candidate
        if candidate is not None:
            self.flush(candidate)


def build_candidate(
    settings: Settings, stored: StoredPack, policy_yaml: str
) -> tuple[ModelPack, GuardrailPipeline]:
    """The candidate's model and its own pipeline, built as the served ones are."""
    pack = ModelPack.load(stored.path, **settings.serving.pack_options())
    return pack, build_pipeline(pack, Policy.from_yaml(policy_yaml), "serve")


def score_rows(rows: _Rows) -> None:
    """Run sampled rows through the candidate and count how it agrees."""
    candidate = rows.candidate
    started = time.perf_counter()
    try:
        pending = candidate.pipeline.prepare(rows.features, rows.ctx)
        guarded = candidate.pipeline.finish(
            pending, candidate.pack.predict_proba(rows.features)
        )
    except Exception as exc:
        # The candidate's policy may refuse what the served one accepts (an
        # unknown context, say): a finding about the candidate, counted.
        log.debug("shadow candidate refused rows: %s", exc)
        with candidate.lock:
            candidate.tally.failed += len(rows.prediction_ids)
            candidate.changes += 1
        return
    seconds = time.perf_counter() - started
    inputs = None
    if rows.served.policy.store_inputs and guarded.labels != rows.labels:
        names = rows.served.feature_names
        inputs = [dict(zip(names, r, strict=True)) for r in rows.features.tolist()]
    with candidate.lock:
        candidate.tally.add(
            prediction_ids=rows.prediction_ids,
            label_names=rows.served.label_names,
            served_labels=rows.labels,
            served_probabilities=rows.probabilities,
            candidate_labels=guarded.labels,
            candidate_probabilities=guarded.probabilities,
            seconds=seconds,
            inputs=inputs,
        )
        candidate.changes += 1


def _sample(
    candidate: _Candidate,
    served: Served,
    features: np.ndarray,
    ctx: RequestContext,
    prediction_ids: Sequence[str],
    batch: GuardedBatch,
    rng: np.random.Generator,
) -> _Rows | None:
    """The request's rows that the run's sample rate picks, or None."""
    rate = candidate.run.sample_rate
    n = len(prediction_ids)
    if n == 1:
        if rate < 1.0 and random.random() >= rate:
            return None
        return _Rows(
            candidate,
            served,
            features,
            ctx,
            list(prediction_ids),
            batch.labels,
            batch.probabilities,
        )
    picked = np.flatnonzero(rng.random(n) < rate)
    if not len(picked):
        return None
    return _Rows(
        candidate,
        served,
        features[picked],
        ctx,
        [prediction_ids[i] for i in picked.tolist()],
        [batch.labels[i] for i in picked],
        batch.probabilities[picked],
    )
