"""Abstain when the answer would be too uncertain.

`low_confidence`: the best allowed label's probability is below
`min_top_probability`; `high_entropy`: the entropy (nats) of the whole distribution
is above `max_entropy_nats`. Abstained rows still show their probabilities.
"""

from __future__ import annotations

import numpy as np

from guardrails.batch import Batch, Stage, StageSetup, Trace, TraceColumn, rounded
from guardrails.policy import OutputBoundsPolicy
from guardrails.rowwise import row_max, row_sum


def entropy_nats(probabilities: np.ndarray) -> np.ndarray:
    """Row entropies in nats, with 0·log 0 = 0."""
    p = probabilities
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -row_sum(terms)


LOW_CONFIDENCE, HIGH_ENTROPY = "low_confidence", "high_entropy"


class OutputBoundsStage(Stage):
    name = "output_bounds"
    reasons = (LOW_CONFIDENCE, HIGH_ENTROPY)

    @classmethod
    def build(cls, setup: StageSetup) -> OutputBoundsStage:
        return cls(setup.policy.output_bounds)

    def __init__(self, policy: OutputBoundsPolicy):
        self.min_top = policy.min_top_probability
        self.max_entropy = policy.max_entropy_nats
        self._quiet: Trace = {"stage": self.name, "acted": False}

    def apply(self, batch: Batch, prepared: None) -> TraceColumn:
        n = batch.n
        if self.min_top <= 0 and self.max_entropy is None:
            return TraceColumn(self._quiet)
        probs = batch.probabilities
        if batch.allowed is not None:
            probs = np.where(batch.allowed, probs, 0.0)
        top = row_max(probs)
        low = top < self.min_top
        high = np.zeros(n, bool)
        entropy = None
        if self.max_entropy is not None:
            entropy = entropy_nats(batch.probabilities)
            high = entropy > self.max_entropy
        acted = low | high
        if not acted.any():
            return TraceColumn(self._quiet)
        batch.abstain(low, LOW_CONFIDENCE)
        batch.abstain(high, HIGH_ENTROPY)
        rows = np.flatnonzero(acted)
        entries = []
        for i in rows.tolist():
            if low[i]:
                entry = {
                    "stage": self.name,
                    "acted": True,
                    "reason": LOW_CONFIDENCE,
                    "top_probability": rounded(top[i]),
                    "min_top_probability": self.min_top,
                }
            else:
                entry = {
                    "stage": self.name,
                    "acted": True,
                    "reason": HIGH_ENTROPY,
                    "entropy_nats": rounded(entropy[i]),  # type: ignore[index]
                    "max_entropy_nats": self.max_entropy,
                }
            entries.append(entry)
        return TraceColumn(self._quiet, rows, entries)
