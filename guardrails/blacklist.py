"""Labels that must never be the answer, globally or per context.

The stage fixes which labels are allowed for the request (the decision stage only
ever answers an allowed label) and handles rows whose preferred label is
blacklisted: `fallback` answers the best allowed label, `abstain` answers nothing
with reason `blacklisted`. When every label is blacklisted every row abstains.
Probabilities are left as they are: they are still shown.
"""

from __future__ import annotations

import numpy as np

from guardrails.batch import (
    Batch,
    RequestContext,
    Stage,
    StageSetup,
    Trace,
    TraceColumn,
)
from guardrails.policy import BlacklistPolicy

BLACKLISTED = "blacklisted"


class BlacklistStage(Stage):
    name = "blacklist"
    reasons = (BLACKLISTED,)

    @classmethod
    def build(cls, setup: StageSetup) -> BlacklistStage:
        return cls(setup.policy.blacklist, setup.labels)

    def __init__(self, policy: BlacklistPolicy, labels: list[str]):
        self.action = policy.action
        self.labels = labels
        base = np.array([label not in policy.global_ for label in labels])
        self._global = base
        self._per_context = {
            ctx: base & np.array([label not in names for label in labels])
            for ctx, names in policy.per_context.items()
        }
        self._quiet: Trace = {"stage": self.name, "acted": False}

    def prepare(self, ctx: RequestContext) -> np.ndarray:
        """(k,) bool: labels that may be answered in the request's context."""
        name = ctx.context
        return self._per_context.get(name, self._global) if name else self._global

    def apply(self, batch: Batch, prepared: np.ndarray) -> TraceColumn:
        allowed = prepared
        if allowed.all():
            return TraceColumn(self._quiet)
        batch.allowed = allowed
        if not allowed.any():
            batch.abstain(np.ones(batch.n, bool), BLACKLISTED)
            entry = {
                "stage": self.name,
                "acted": True,
                "action": "abstain",
                "blocked": "every label",
            }
            return TraceColumn(entry)
        preferred = np.argmax(batch.scores(), axis=1)
        blocked = ~allowed[preferred]
        if not blocked.any():
            return TraceColumn(self._quiet)
        rows = np.flatnonzero(blocked)
        if self.action == "abstain":
            batch.abstain(blocked, BLACKLISTED)
            entries = [
                {
                    "stage": self.name,
                    "acted": True,
                    "action": "abstain",
                    "blocked": self.labels[preferred[i]],
                }
                for i in rows.tolist()
            ]
        else:
            fallback = batch.best_allowed()
            entries = [
                {
                    "stage": self.name,
                    "acted": True,
                    "action": "fallback",
                    "blocked": self.labels[preferred[i]],
                    "fallback": self.labels[fallback[i]],
                }
                for i in rows.tolist()
            ]
        return TraceColumn(self._quiet, rows, entries)
