"""Adjust probabilities from the training priors to the deployment priors.

    p'(y|x) ∝ p(y|x) · π_deploy(y) / π_train(y), renormalised per row.

Deployment priors come from, in order: explicit priors in the request, the named
context's priors in the policy, the online EM estimate (when enabled and its guard
passed), else the training priors (identity). Unless the policy allows hard zeros,
deployment priors are smoothed towards uniform and floored, because a zero prior
turns one surprising row into an infinite log-loss. With hard zeros allowed, only
labels given exactly 0 stay 0; a row whose every likely label was zeroed keeps its
unadjusted probabilities and says so in the trace.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from guardrails.batch import (
    Batch,
    PriorChoice,
    RequestContext,
    Stage,
    StageSetup,
    Trace,
    TraceColumn,
    rounded,
)
from guardrails.errors import InvalidPriors, UnknownContext
from guardrails.online_priors import OnlinePriorEstimator, row_keys
from guardrails.policy import PriorsPolicy
from guardrails.rowwise import row_sum

#: Training priors are never divided by less than this (a label the training set
#: lacked would otherwise get an infinite weight).
TRAIN_PRIOR_EPS = 1e-12


def prepare_priors(
    weights: np.ndarray,
    *,
    floor: float,
    smoothing: float,
    allow_hard_zeros: bool,
) -> np.ndarray:
    """Normalise non-negative weights, mix in `smoothing` of uniform, floor them.

    With `allow_hard_zeros`, entries given as exactly 0 stay 0."""
    k = len(weights)
    priors = weights / weights.sum()
    zeros = priors == 0 if allow_hard_zeros else None
    if smoothing > 0:
        priors = (1.0 - smoothing) * priors + smoothing / k
    if floor > 0:
        priors = np.maximum(priors, floor)
    if zeros is not None and zeros.any():
        priors = np.where(zeros, 0.0, priors)
    return priors / priors.sum()


def adjust(
    probabilities: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Reweight rows by `weights` (π_deploy/π_train) and renormalise.

    Returns (adjusted, fell_back): rows whose mass became 0 keep their input."""
    adjusted = probabilities * weights
    total = row_sum(adjusted)[:, None]
    fell_back = total[:, 0] <= 0
    if fell_back.any():
        adjusted[fell_back] = probabilities[fell_back]
        total[fell_back] = 1.0
    adjusted /= total
    return adjusted, fell_back


class PriorsStage(Stage):
    """Also the online estimate's source: it feeds the estimator the rows of
    requests that name neither priors nor a context, as they arrive here (after
    temperature, before any prior), and counts the other requests' rows as left
    out."""

    name = "priors"

    @classmethod
    def build(cls, setup: StageSetup) -> PriorsStage:
        meta = setup.meta
        return cls(
            setup.policy.priors,
            setup.labels,
            meta.training_priors,
            setup.prior_estimator,
        )

    def __init__(
        self,
        policy: PriorsPolicy,
        labels: list[str],
        training_priors: Mapping[str, float],
        estimator: OnlinePriorEstimator | None = None,
    ):
        self.policy = policy
        self.labels = labels
        self.train = np.array([training_priors[label] for label in labels], float)
        self._train_div = np.maximum(self.train, TRAIN_PRIOR_EPS)
        self.estimator = estimator if policy.online.enabled else None
        self._identity = PriorChoice(
            "training", None, {"stage": self.name, "acted": False, "source": "training"}
        )
        # A context declared without priors ({}) answers with the training priors.
        self._contexts = {
            name: self._choice(f"context:{name}", self._vector(weights))
            if weights
            else self._identity
            for name, weights in policy.contexts.items()
        }

    def _vector(self, weights: Mapping[str, float]) -> np.ndarray:
        return np.array([weights.get(label, 0.0) for label in self.labels], float)

    def _choice(
        self, source: str, raw: np.ndarray, hard_zeros: bool = True
    ) -> PriorChoice:
        p = self.policy
        priors = prepare_priors(
            raw,
            floor=p.floor,
            smoothing=p.smoothing,
            allow_hard_zeros=p.allow_hard_zeros and hard_zeros,
        )
        weights = priors / self._train_div
        identity = bool(np.allclose(weights, weights[0], rtol=1e-9, atol=0))
        trace: Trace = {
            "stage": self.name,
            "acted": not identity,
            "source": source,
            "priors": {
                lab: rounded(v) for lab, v in zip(self.labels, priors, strict=True)
            },
        }
        return PriorChoice(source, None if identity else weights, trace)

    def prepare(self, ctx: RequestContext) -> PriorChoice:
        """Resolve the request's priors. Only requests that name neither priors
        nor a context feed the online estimate."""
        if ctx.priors is not None:
            return self._choice("explicit", self._validate(ctx.priors))
        if ctx.context is not None:
            choice = self._contexts.get(ctx.context)
            if choice is None:
                raise UnknownContext(ctx.context, sorted(self._contexts))
            return choice
        if self.estimator is None:
            return self._identity
        estimate = self.estimator.current()
        if estimate.used:
            # EM can drive a prior to 0; that is never an operator's hard zero.
            choice = self._choice("online", estimate.priors, hard_zeros=False)
            return replace(choice, observe_online=True)
        trace = {**self._identity.trace, "online": estimate.reason}
        return PriorChoice("training", None, trace, observe_online=True)

    def _validate(self, explicit: Mapping[str, float]) -> np.ndarray:
        unknown = sorted(set(explicit) - set(self.labels))
        if unknown:
            raise InvalidPriors(f"unknown labels {unknown}; labels: {self.labels}")
        missing = [label for label in self.labels if label not in explicit]
        if missing:
            raise InvalidPriors(f"missing labels {missing}; give one prior per label")
        bad = {k: v for k, v in explicit.items() if not (v >= 0 and math.isfinite(v))}
        if bad:
            raise InvalidPriors(f"priors must be finite and >= 0, got {bad}")
        vector = self._vector(explicit)
        if vector.sum() <= 0:
            raise InvalidPriors("priors are all zero")
        return vector

    def apply(self, batch: Batch, prepared: PriorChoice) -> TraceColumn:
        choice = prepared
        if choice.observe_online:
            self._observe(batch)
        elif self.estimator is not None:
            self.estimator.leave_out(batch.n, f"request named {choice.source} priors")
        if choice.weights is None:
            return TraceColumn(choice.trace)
        batch.prior_weights = choice.weights
        before = batch.probabilities
        after, fell_back = adjust(before, choice.weights)
        batch.probabilities = after
        top_before = before.argmax(axis=1)
        top_after = after.argmax(axis=1)
        rows = np.flatnonzero((top_before != top_after) | fell_back)
        entries = []
        for i in rows.tolist():
            entry = {
                **choice.trace,
                "top_before": self.labels[top_before[i]],
                "top_after": self.labels[top_after[i]],
            }
            if fell_back[i]:
                entry["fallback"] = "training priors: every likely label had prior 0"
            entries.append(entry)
        return TraceColumn(choice.trace, rows, entries)

    def _observe(self, batch: Batch) -> None:
        # Rows outside the input bounds still have the model's probabilities and
        # are part of the deployment's label mix: leaving them out starved the
        # window. The estimator itself leaves out rows without finite ones.
        assert self.estimator is not None
        self.estimator.observe(batch.probabilities, row_keys(batch.features))
