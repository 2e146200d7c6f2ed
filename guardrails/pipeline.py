"""The guardrail pipeline: the registry's stages in order around one model call.

The stages come from `guardrails.registry`; the pipeline calls none of them by
name. A request goes through it in two steps, so that a caller can run the model
its own way in between (directly, or batched across requests):

    prepare(features, ctx)   every stage resolves and validates what it needs to
                             know about the request (a bad context or explicit
                             priors is refused here), then the stages that run
                             before the model (input bounds) apply
    finish(pending, probs)   the model's probabilities go through the other
                             stages; the result is a `GuardedBatch`

`run` does both around a model function. `guardrails.build.build_pipeline` is the
one recipe that builds a pipeline from a pack and a policy; the service, offline
evaluation, regression replay and the benchmarks all use it, so online and offline
answers cannot differ.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from guardrails.batch import Batch, RequestContext, StageSetup, Trace, TraceColumn
from guardrails.decision import cost_matrix
from guardrails.errors import FeaturesInvalid, ModelOutputInvalid
from guardrails.online_priors import OnlinePriorEstimator
from guardrails.policy import Policy
from guardrails.registry import ABSTAIN_REASONS, REASON_CODES, build_stages
from guardrails.rowwise import row_bits, row_sum
from packs.calibration_scores import CalibrationSet
from packs.format import PROBABILITY_ROUNDING, PackMetadata

__all__ = [
    "REASON_NAMES",
    "GuardedBatch",
    "GuardrailPipeline",
    "Pending",
    "RequestContext",
]

#: What `GuardedBatch.reason_codes` index: None (answered), then the reasons.
REASON_NAMES: tuple[str | None, ...] = (None, *ABSTAIN_REASONS)
_REASON_NAMES = np.array(REASON_NAMES, dtype=object)


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
    """Abstention reason per row (see `registry.ABSTAIN_REASONS`); None when
    answered."""
    trace_columns: list[TraceColumn]
    """One per stage, in order: what each stage did, per row (see `traces`)."""
    prediction_sets: np.ndarray | None = None
    """(n, k) bool conformal sets (label j in row i's set); None when the
    conformal stage is off or the pack has no calibration set."""
    label_codes: np.ndarray | None = None
    """(n,) what `labels` names, as indexes into the pack's labels (-1: None);
    None when not known (a batch made by hand)."""
    reason_codes: np.ndarray | None = None
    """(n,) what `reasons` names, as indexes into `REASON_NAMES` (0: None)."""

    @property
    def n(self) -> int:
        return len(self.labels)

    def label_counts(self, labels: Sequence[str]) -> dict[str | None, int]:
        """Answered rows per label name (`labels`: the pack's, in order);
        abstained rows are left out."""
        if self.label_codes is None:
            return {k: v for k, v in Counter(self.labels).items() if k is not None}
        codes = self.label_codes[self.label_codes >= 0]
        counts = np.bincount(codes, minlength=len(labels)).tolist()
        return {labels[i]: c for i, c in enumerate(counts) if c}  # no None key

    def reason_counts(self) -> dict[str | None, int]:
        """Abstained rows per reason."""
        if self.reason_codes is None:
            return {k: v for k, v in Counter(self.reasons).items() if k is not None}
        counts = np.bincount(self.reason_codes, minlength=len(REASON_NAMES)).tolist()
        return {str(REASON_NAMES[i]): c for i, c in enumerate(counts) if c and i}

    def prediction_set_lists(self, labels: list[str]) -> list[list[str]] | None:
        """Each row's prediction set as label names, in label order."""
        if self.prediction_sets is None:
            return None
        sets = self.prediction_sets
        names = np.array(labels, dtype=object)
        if not len(sets) or sets.shape[1] > 62:
            return [names[row].tolist() for row in sets]
        # A few distinct sets among many rows: each is named once (one numpy
        # call per row was half the cost of a 1,000-row column request), and
        # every row gets its own copy of its list.
        _, first, inverse = np.unique(
            row_bits(sets), return_index=True, return_inverse=True
        )
        named = [names[sets[i]].tolist() for i in first.tolist()]
        return [list(named[i]) for i in inverse.reshape(-1).tolist()]

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


@dataclass
class Pending:
    """A request between `prepare` and `finish`: the model has not run yet."""

    batch: Batch
    prepared: list[Any]
    """What each stage prepared for this request, in stage order."""
    traces: list[TraceColumn]
    """Trace columns of the stages that already ran (before the model)."""


class GuardrailPipeline:
    def __init__(
        self,
        policy: Policy,
        meta: PackMetadata,
        prior_estimator: OnlinePriorEstimator | None = None,
        calibration: CalibrationSet | None = None,
    ):
        policy.check_against(meta)
        self.policy = policy
        self.meta = meta
        self.labels = list(meta.labels)
        self.prior_estimator = prior_estimator
        """The online prior estimate this pipeline feeds (None: off)."""
        self.stages = build_stages(
            StageSetup(policy, meta, prior_estimator, calibration)
        )
        self._before_model = sum(1 for s in self.stages if s.before_model)
        self._label_names = np.array([*self.labels, None], dtype=object)
        self._cost = cost_matrix(policy.decision.cost_matrix, self.labels)
        self._width = len(meta.feature_names)

    @property
    def policy_version(self) -> str:
        return self.policy.version

    def stage_names(self) -> list[str]:
        """Stage names in the order they run (and appear in every trace)."""
        return [stage.name for stage in self.stages]

    def prepare(self, features: np.ndarray, ctx: RequestContext) -> Pending:
        """Validate the request and run the stages before the model (raises 422
        errors for a bad context, bad priors or rows of the wrong shape)."""
        prepared = [stage.prepare(ctx) for stage in self.stages]
        if features.ndim != 2 or features.shape[1] != self._width:
            raise FeaturesInvalid(features.shape, self.meta.feature_names)
        batch = Batch(features, self.labels, REASON_CODES, self._cost)
        k = self._before_model
        traces = [
            stage.apply(batch, p)
            for stage, p in zip(self.stages[:k], prepared[:k], strict=True)
        ]
        return Pending(batch, prepared, traces)

    def finish(self, pending: Pending, model_probabilities: np.ndarray) -> GuardedBatch:
        """Guard the model's output for a prepared request."""
        batch, k = pending.batch, self._before_model
        batch.model_probabilities = model_probabilities
        batch.probabilities = self._normalised(model_probabilities, batch.n)
        traces = list(pending.traces)
        for stage, p in zip(self.stages[k:], pending.prepared[k:], strict=True):
            traces.append(stage.apply(batch, p))
        abstained = batch.abstain_code > 0
        assert batch.choice is not None, "the last stage must choose the answers"
        label_index = np.where(abstained | (batch.choice < 0), -1, batch.choice)
        return GuardedBatch(
            probabilities=batch.probabilities,
            model_probabilities=model_probabilities,
            labels=self._label_names[label_index].tolist(),
            abstained=abstained,
            reasons=_REASON_NAMES[batch.abstain_code].tolist(),
            trace_columns=traces,
            prediction_sets=batch.prediction_sets,
            label_codes=label_index,
            reason_codes=batch.abstain_code,
        )

    def run(
        self,
        features: np.ndarray,
        predict_proba: Callable[[np.ndarray], np.ndarray],
        ctx: RequestContext,
    ) -> GuardedBatch:
        """Guard one batch of rows (n, d) in `meta.feature_names` order."""
        pending = self.prepare(features, ctx)
        return self.finish(pending, predict_proba(features))

    def _normalised(self, raw: np.ndarray, n: int) -> np.ndarray:
        k = len(self.labels)
        if raw.shape != (n, k):
            raise ModelOutputInvalid(f"shape {raw.shape}, expected ({n}, {k})")
        if (raw < 0).any():
            # Tree ensembles exported by skl2onnx answer a hair below 0 (float
            # rounding) where a leaf holds no row of a class: those are zeros.
            if (raw < -PROBABILITY_ROUNDING).any():
                raise ModelOutputInvalid(
                    f"values must be >= 0 (down to -{PROBABILITY_ROUNDING:g} is "
                    "taken as rounding error)"
                )
            raw = np.clip(raw, 0.0, None)
        total = row_sum(raw)
        if not (np.isfinite(total).all() and (total > 0).all()):
            raise ModelOutputInvalid("values must be finite, with positive rows")
        return raw / total[:, None]
