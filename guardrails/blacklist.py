"""Stage 4: labels that must never be the answer, globally or per context.

The stage fixes which labels are allowed for the request (the decision stage only
ever answers an allowed label) and handles rows whose preferred label is
blacklisted: `fallback` answers the best allowed label, `abstain` answers nothing
with reason `blacklisted`. When every label is blacklisted every row abstains.
Probabilities are left as they are: they are still shown.
"""

from __future__ import annotations

import numpy as np

from guardrails.batch import BLACKLISTED, Batch, Request, Trace, TraceColumn
from guardrails.policy import BlacklistPolicy


class BlacklistStage:
    name = "blacklist"

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

    def allowed(self, context: str | None) -> np.ndarray:
        """(k,) bool: labels that may be answered in this context."""
        return self._per_context.get(context, self._global) if context else self._global

    def apply(self, batch: Batch, request: Request) -> TraceColumn:
        allowed = request.allowed
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
