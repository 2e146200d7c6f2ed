"""Choose the answer among the allowed labels.

Without a cost matrix the answer is the most probable allowed label. With one
(`cost[true][predicted]`), it is the allowed label with the lowest expected cost
Σ_y p(y|x)·cost[y][label] under the calibrated probabilities, e.g. to prefer a
false alarm over a missed sick patient. Rows with no allowed label answer nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from guardrails.batch import Batch, Stage, StageSetup, Trace, TraceColumn, rounded


def cost_matrix(
    costs: Mapping[str, Mapping[str, float]] | None, labels: list[str]
) -> np.ndarray | None:
    """(k, k) array [true, predicted]; missing entries are 0 on the diagonal and
    1 elsewhere. None without a cost matrix."""
    if costs is None:
        return None
    k = len(labels)
    matrix = 1.0 - np.eye(k)
    index = {label: i for i, label in enumerate(labels)}
    for true, row in costs.items():
        for predicted, cost in row.items():
            matrix[index[true], index[predicted]] = cost
    return matrix


class DecisionStage(Stage):
    name = "decision"

    @classmethod
    def build(cls, setup: StageSetup) -> DecisionStage:
        labels = setup.labels
        return cls(cost_matrix(setup.policy.decision.cost_matrix, labels), labels)

    def __init__(self, matrix: np.ndarray | None, labels: list[str]):
        self.matrix = matrix
        self.labels = labels
        rule = "argmax" if matrix is None else "min_expected_cost"
        self._quiet: Trace = {"stage": self.name, "acted": False, "rule": rule}

    def apply(self, batch: Batch, prepared: None) -> TraceColumn:
        choice = batch.best_allowed()
        if batch.allowed is not None and not batch.allowed.any():
            choice = np.full(batch.n, -1)
        batch.choice = choice
        if self.matrix is None:
            return TraceColumn(self._quiet)
        probs = batch.probabilities
        if batch.allowed is not None:
            probs = np.where(batch.allowed, probs, -np.inf)
        likeliest = probs.argmax(axis=1)
        rows = np.flatnonzero((choice != likeliest) & (choice >= 0))
        cost = batch.scores()
        entries = [
            {
                **self._quiet,
                "acted": True,
                "most_probable": self.labels[likeliest[i]],
                "label": self.labels[choice[i]],
                "expected_cost": rounded(-cost[i, choice[i]]),
            }
            for i in rows.tolist()
        ]
        return TraceColumn(self._quiet, rows, entries)
