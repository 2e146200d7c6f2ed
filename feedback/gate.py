"""The promotion gate: may a candidate pack replace the served one?

Two rules, both configurable: no more than `max_newly_broken` regression cases
that the baseline passed may fail with the candidate (default 0), and no
test-table metric (accuracy, macro-F1) may drop by more than `max_metric_drop`
(absolute, default 0.01). Every failed rule becomes one reason a person can act on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from feedback.regression import RegressionReport

GATED_METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    """Why it failed (empty when it passed)."""

    def to_text(self) -> str:
        if self.passed:
            return "GATE PASSED"
        return "GATE FAILED\n" + "\n".join(f"- {r}" for r in self.reasons)


def gate(
    report: RegressionReport,
    *,
    max_newly_broken: int = 0,
    max_metric_drop: float = 0.01,
) -> GateDecision:
    """Decide on a regression report."""
    if max_newly_broken < 0 or max_metric_drop < 0:
        raise ValueError("gate tolerances must be >= 0")
    reasons: list[str] = []
    broken = report.newly_broken
    if len(broken) > max_newly_broken:
        ids = ", ".join(str(c.case_id) for c in broken[:20])
        reasons.append(
            f"{len(broken)} regression case(s) the baseline passes now fail "
            f"(allowed {max_newly_broken}): case ids {ids}"
        )
    for name in GATED_METRICS:
        base = report.metrics["baseline"].get(name, math.nan)
        cand = report.metrics["candidate"].get(name, math.nan)
        if math.isnan(base) or math.isnan(cand):
            if report.test_rows:
                reasons.append(f"test {name} could not be computed")
            continue
        # A small epsilon so that an exact tie at the tolerance passes.
        if base - cand > max_metric_drop + 1e-12:
            reasons.append(
                f"test {name} dropped by {base - cand:.4f} "
                f"({base:.4f} -> {cand:.4f}; allowed {max_metric_drop:.4f})"
            )
    return GateDecision(passed=not reasons, reasons=reasons)
