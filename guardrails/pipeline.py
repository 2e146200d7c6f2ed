"""The guardrail pipeline: the stages in their fixed order around one model call.

    input_bounds → (model) → temperature → priors → blacklist → output_bounds
    → decision

`GuardrailPipeline.run` is the one function the service, offline evaluation and
regression runs call, so online and offline answers cannot differ. Everything that
can be refused (unknown context, bad explicit priors) is checked before the model
runs. A new stage is a module with a class following `batch.Stage` and one line in
the stage list of `GuardrailPipeline.__init__`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from guardrails.batch import REASONS, Batch, Request, Stage, Trace, TraceColumn
from guardrails.blacklist import BlacklistStage
from guardrails.decision import DecisionStage, cost_matrix
from guardrails.errors import FeaturesInvalid, ModelOutputInvalid, UnknownContext
from guardrails.input_bounds import InputBoundsStage
from guardrails.online_priors import OnlinePriorEstimator
from guardrails.output_bounds import OutputBoundsStage
from guardrails.policy import Policy
from guardrails.priors import PriorsStage
from guardrails.temperature import TemperatureStage
from packs.format import PackMetadata

_REASON_NAMES = np.array(REASONS, dtype=object)


@dataclass(frozen=True)
class RequestContext:
    context: str | None = None
    """Named deployment context from the policy, e.g. "Dream"."""
    priors: Mapping[str, float] | None = None
    """Explicit deployment priors, one per label (highest precedence)."""


@dataclass
class GuardedBatch:
    probabilities: np.ndarray
    """(n, k) final calibrated probabilities; rows sum to 1."""
    model_probabilities: np.ndarray
    """(n, k) raw model output."""
    labels: list[str | None]
    """The answer per row; None when the row abstained."""
    abstained: np.ndarray
    """(n,) bool."""
    reasons: list[str | None]
    """Abstention reason per row: out_of_bounds, blacklisted, low_confidence,
    high_entropy; None when answered."""
    trace_columns: list[TraceColumn]
    """One per stage, in order: what each stage did, per row (see `traces`)."""

    @property
    def n(self) -> int:
        return len(self.labels)

    @cached_property
    def traces(self) -> list[list[Trace]]:
        """Per row, one dict per stage in order: {"stage", "acted", ...details}.
        Rows no stage treated on its own share one list: read-only."""
        quiet_row = [c.quiet for c in self.trace_columns]
        out = [quiet_row] * self.n
        own = [
            (j, dict(zip(c.rows.tolist(), c.entries, strict=True)))
            for j, c in enumerate(self.trace_columns)
            if len(c.rows)
        ]
        for i in set().union(*(entries for _, entries in own)):
            row = list(quiet_row)
            for j, entries in own:
                row[j] = entries.get(i, row[j])
            out[i] = row
        return out

    def acted_counts(self) -> dict[str, int]:
        """Rows each stage acted on (stages that acted on none are left out)."""
        counts = {c.stage: c.acted_rows(self.n) for c in self.trace_columns}
        return {stage: k for stage, k in counts.items() if k}

    def acted_mask(self) -> np.ndarray:
        """(n,) bool: rows on which at least one stage acted."""
        mask = np.zeros(self.n, bool)
        for c in self.trace_columns:
            if not c.quiet_everywhere:
                mask |= c.acted_mask(self.n)
        return mask


class GuardrailPipeline:
    def __init__(
        self,
        policy: Policy,
        meta: PackMetadata,
        prior_estimator: OnlinePriorEstimator | None = None,
    ):
        policy.check_against(meta)
        self.policy = policy
        self.meta = meta
        self.labels = list(meta.labels)
        self.prior_estimator = prior_estimator
        self._label_names = np.array([*self.labels, None], dtype=object)
        self._cost = cost_matrix(policy.decision.cost_matrix, self.labels)
        self._contexts = set(policy.priors.contexts)
        self._width = len(meta.feature_names)
        self.input_bounds = InputBoundsStage(policy.input_bounds, meta)
        self.temperature = TemperatureStage(policy.temperature, meta.temperature)
        self.priors = PriorsStage(
            policy.priors, self.labels, meta.training_priors, prior_estimator
        )
        self.blacklist = BlacklistStage(policy.blacklist, self.labels)
        self._after_model: list[Stage] = [
            self.temperature,
            self.priors,
            self.blacklist,
            OutputBoundsStage(policy.output_bounds),
            DecisionStage(self._cost, self.labels),
        ]

    @property
    def policy_version(self) -> str:
        return self.policy.version

    def stage_names(self) -> list[str]:
        """Stage names in the order they run (and appear in every trace)."""
        return [self.input_bounds.name, *(s.name for s in self._after_model)]

    def describe(self) -> dict[str, Any]:
        """The settings in force, resolved against the pack (for an info endpoint)."""
        return {
            "policy_version": self.policy_version,
            "stages": self.stage_names(),
            "input_bounds": {
                "enabled": self.input_bounds.enabled,
                "action": self.input_bounds.action,
                "features": self.input_bounds.bounds(),
            },
            "temperature": self.temperature.temperature,
            "contexts": sorted(self._contexts),
            "online_priors": self.priors.estimator is not None,
            "decision": "argmax" if self._cost is None else "min_expected_cost",
        }

    def request(self, ctx: RequestContext) -> Request:
        """Validate a request's context and priors (raises 422 errors)."""
        name = ctx.context
        if name is not None and name not in self._contexts:
            raise UnknownContext(name, sorted(self._contexts))
        choice, observe = self.priors.choose(name, ctx.priors)
        return Request(name, choice, self.blacklist.allowed(name), observe)

    def run(
        self,
        features: np.ndarray,
        predict_proba: Callable[[np.ndarray], np.ndarray],
        ctx: RequestContext,
    ) -> GuardedBatch:
        """Guard one batch of rows (n, d) in `meta.feature_names` order."""
        request = self.request(ctx)
        if features.ndim != 2 or features.shape[1] != self._width:
            raise FeaturesInvalid(features.shape, self.meta.feature_names)
        batch = Batch(features, self.labels, self._cost)
        traces = [self.input_bounds.apply(batch, request)]
        raw = predict_proba(features)
        batch.model_probabilities = raw
        batch.probabilities = self._normalised(raw, batch.n)
        for stage in self._after_model:
            traces.append(stage.apply(batch, request))
            if stage is self.temperature and request.observe_online:
                self._observe(batch)
        abstained = batch.abstain_code > 0
        assert batch.choice is not None
        label_index = np.where(abstained | (batch.choice < 0), -1, batch.choice)
        return GuardedBatch(
            probabilities=batch.probabilities,
            model_probabilities=raw,
            labels=self._label_names[label_index].tolist(),
            abstained=abstained,
            reasons=_REASON_NAMES[batch.abstain_code].tolist(),
            trace_columns=traces,
        )

    def _normalised(self, raw: np.ndarray, n: int) -> np.ndarray:
        k = len(self.labels)
        if raw.shape != (n, k):
            raise ModelOutputInvalid(f"shape {raw.shape}, expected ({n}, {k})")
        total = raw.sum(axis=1, keepdims=True)
        if not (np.isfinite(total).all() and (total > 0).all() and (raw >= 0).all()):
            raise ModelOutputInvalid("values must be finite, >= 0, with positive rows")
        return raw / total

    def _observe(self, batch: Batch) -> None:
        # Rows outside the input bounds say nothing about the deployment priors.
        estimator = self.prior_estimator
        assert estimator is not None
        inside = batch.abstain_code == 0
        estimator.observe(
            batch.probabilities if inside.all() else batch.probabilities[inside]
        )
