"""Before the model: every feature must lie in its allowed range.

Ranges come from the pack's training range widened by a margin, or from the policy;
a feature that was constant in training is unchecked unless the policy bounds it.
Both ends are inclusive and compared in the dtype of the features (float32 for the
default pack), so a value equal to a bound passes even after the float32 cast, and
the next representable value outside fails. NaN is always out of bounds.
"""

from __future__ import annotations

import math

import numpy as np

from guardrails.batch import Batch, Stage, StageSetup, Trace, TraceColumn
from guardrails.errors import InputOutOfBounds
from guardrails.policy import InputBoundsPolicy
from guardrails.rowwise import row_any
from packs.format import PackMetadata


def resolve_bounds(
    policy: InputBoundsPolicy, meta: PackMetadata
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per feature in `meta.feature_names` order; ±inf when open."""
    names = meta.feature_names
    low = np.full(len(names), -np.inf)
    high = np.full(len(names), np.inf)
    for j, name in enumerate(names):
        b = meta.feature_bounds[name]
        # A feature with one value in all of training has no range to widen: any
        # other value would fail, so it is left open (the pack lists it).
        if policy.source == "training" and b.max > b.min:
            margin = policy.margin_fraction * (b.max - b.min)
            low[j], high[j] = b.min - margin, b.max + margin
        override = policy.features.get(name)
        if override is not None:
            if override.min is not None:
                low[j] = override.min
            if override.max is not None:
                high[j] = override.max
    return low, high


def _json_number(x: float | np.floating) -> float | None:
    """A finite number for JSON, printed at its own precision (a float32 32.1 stays
    32.1, not 32.099998474121094); None for NaN and the open ends (±inf)."""
    return float(str(x)) if math.isfinite(x) else None


OUT_OF_BOUNDS = "out_of_bounds"


class InputBoundsStage(Stage):
    name = "input_bounds"
    before_model = True
    reasons = (OUT_OF_BOUNDS,)

    @classmethod
    def build(cls, setup: StageSetup) -> InputBoundsStage:
        return cls(setup.policy.input_bounds, setup.meta)

    def __init__(self, policy: InputBoundsPolicy, meta: PackMetadata):
        self.enabled = policy.enabled
        self.action = policy.action
        self.feature_names = meta.feature_names
        self.low, self.high = resolve_bounds(policy, meta)
        self._by_dtype: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {}
        self._quiet: Trace = {"stage": self.name, "acted": False}
        if not self.enabled:
            self._quiet = {**self._quiet, "enabled": False}

    def bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """Allowed range per feature, None for an open end (for people and APIs)."""
        return {
            name: (_json_number(lo), _json_number(hi))
            for name, lo, hi in zip(
                self.feature_names, self.low, self.high, strict=True
            )
        }

    def _limits(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        limits = self._by_dtype.get(dtype)
        if limits is None:
            # Round the bounds to the features' precision once, so comparisons
            # are exact in the dtype the client's values were cast to.
            kind = dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)
            limits = (self.low.astype(kind), self.high.astype(kind))
            self._by_dtype[dtype] = limits
        return limits

    def out_of_bounds(self, features: np.ndarray) -> np.ndarray:
        """(n, d) bool: True where a value is outside its range (or NaN)."""
        low, high = self._limits(features.dtype)
        return ~((features >= low) & (features <= high))

    def apply(self, batch: Batch, prepared: None) -> TraceColumn:
        if not self.enabled:
            return TraceColumn(self._quiet)
        bad = self.out_of_bounds(batch.features)
        bad_rows = row_any(bad)
        if not bad_rows.any():
            return TraceColumn(self._quiet)
        rows = np.flatnonzero(bad_rows)
        if self.action == "reject":
            row = int(rows[0])
            j = int(np.flatnonzero(bad[row])[0])
            raise InputOutOfBounds(
                row,
                self.feature_names[j],
                float(str(batch.features[row, j])),
                *self._readable_bounds(j),
                rows_out=len(rows),
            )
        batch.abstain(bad_rows, OUT_OF_BOUNDS)
        entries = [self._entry(batch.features[i], bad[i]) for i in rows.tolist()]
        return TraceColumn(self._quiet, rows, entries)

    def _readable_bounds(self, j: int) -> tuple[float, float]:
        return float(round(self.low[j], 9)), float(round(self.high[j], 9))

    def _entry(self, values: np.ndarray, bad: np.ndarray) -> Trace:
        return {
            "stage": self.name,
            "acted": True,
            "action": "abstain",
            "out_of_bounds": [
                {
                    "feature": self.feature_names[j],
                    "value": _json_number(values[j]),
                    "min": _json_number(round(self.low[j], 9)),
                    "max": _json_number(round(self.high[j], 9)),
                }
                for j in np.flatnonzero(bad).tolist()
            ],
        }
