"""The promotion gate: may a candidate pack replace the served one?

Two rules, both configurable: no more than `max_newly_broken` regression cases
that the baseline passed may fail with the candidate (default 0), and no
test-table metric (accuracy, macro-F1) may drop by more than `max_metric_drop`
(absolute, default 0.01). A gate with no evidence at all (no case, no test row)
fails unless allowed. Every failed rule becomes one reason a person can act on.

The gate promises that: no passing case breaks beyond the tolerance, and the test
metrics hold. It does not promise that the candidate fixes any reported case:
the first line of its summary says how many it fixes, breaks and still fails.
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
    cases: int = 0
    """Confirmed regression cases replayed."""
    fixed: int = 0
    broken: int = 0
    still_failing: int = 0
    test_rows: int = 0

    def headline(self) -> str:
        """One line that says what was decided on what evidence: the first line
        of every gate summary, so a pass that fixed nothing reads as such."""
        verdict = "GATE PASSED" if self.passed else "GATE FAILED"
        return (
            f"{verdict}: of {self.cases} confirmed case(s) the candidate fixes "
            f"{self.fixed}, breaks {self.broken}, still fails {self.still_failing}; "
            f"test set {self.test_rows} row(s)"
        )

    def to_text(self) -> str:
        if self.passed:
            return self.headline()
        return self.headline() + "\n" + "\n".join(f"- {r}" for r in self.reasons)


def gate(
    report: RegressionReport,
    *,
    max_newly_broken: int = 0,
    max_metric_drop: float = 0.01,
    allow_empty: bool = False,
) -> GateDecision:
    """Decide on a regression report.

    With no regression case and no test row there is no evidence either way:
    that fails unless `allow_empty` (a new deployment's first model, say).
    """
    if max_newly_broken < 0 or max_metric_drop < 0:
        raise ValueError("gate tolerances must be >= 0")
    reasons: list[str] = []
    if not report.cases and not report.test_rows and not allow_empty:
        reasons.append(
            "nothing was replayed: 0 regression cases and no test rows; check the "
            "database and the test set, or allow an empty gate explicitly"
        )
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
    return GateDecision(
        passed=not reasons,
        reasons=reasons,
        cases=len(report.cases),
        fixed=len(report.fixed),
        broken=len(broken),
        still_failing=len(report.still_failing),
        test_rows=report.test_rows,
    )
