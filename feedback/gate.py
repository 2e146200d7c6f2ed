"""The promotion gate: may a candidate pack replace the served one?

Two rules, both configurable: no more than `max_newly_broken` regression cases
that the baseline passed may fail with the candidate (default 0), and no
test-table metric (accuracy, macro-F1) may drop by more than `max_metric_drop`
(absolute, default 0.01). A gate with no evidence at all (no case, no test row)
fails unless allowed. Every failed rule becomes one reason a person can act on.

When the candidate ran in shadow on live traffic (`feedback.shadow`), its result
is a third rule (`ShadowRules`): enough rows, an estimated accuracy no worse
than the served model's minus a margin, and agreement with the served answers on
the rows the served model was confident about. Without a shadow run the summary
says "no shadow run" and the rule does not block.

The gate promises that: no passing case breaks beyond the tolerance, and the test
metrics hold. It does not promise that the candidate fixes any reported case:
the first line of its summary says how many it fixes, breaks and still fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from feedback.regression import RegressionReport
from feedback.shadow import ShadowResult
from feedback.shadow_rules import ShadowRules

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
    shadow: dict[str, Any] = field(default_factory=lambda: {"status": NO_SHADOW})
    """The shadow rule's numbers and verdict (`shadow_check`)."""

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
        lines = [self.headline(), shadow_line(self.shadow)]
        lines += [f"- {r}" for r in self.reasons]
        return "\n".join(lines)


NO_SHADOW = "no shadow run"


def shadow_check(
    result: ShadowResult | None, rules: ShadowRules
) -> tuple[dict[str, Any], list[str]]:
    """(the summary's shadow section, the reasons it fails). No run: no reason."""
    if result is None:
        return {"status": NO_SHADOW, "passed": True}, []
    t = result.tally
    served = t.served_estimated_accuracy
    candidate = t.candidate_estimated_accuracy
    confident = t.confident_agreement
    reasons = []
    enough = t.rows >= rules.min_rows
    if not enough:
        reasons.append(
            f"shadow run {result.run.id} has {t.rows} row(s); the gate needs at "
            f"least {rules.min_rows}"
        )
    accurate = enough and (
        served is None
        or candidate is None
        or candidate >= served - rules.accuracy_margin - 1e-12
    )
    if enough and not accurate:
        reasons.append(
            f"shadow: the candidate's estimated accuracy {candidate:.4f} is below "
            f"the served {served:.4f} minus {rules.accuracy_margin:.4f}"
        )
    agrees = enough and (
        confident is None or confident >= rules.min_confident_agreement - 1e-12
    )
    if enough and not agrees:
        reasons.append(
            f"shadow: agreement on {t.confident_rows} confident row(s) is "
            f"{confident:.4f}, below {rules.min_confident_agreement:.4f}"
        )
    section = {
        "status": "checked",
        "passed": not reasons,
        "run_id": result.run.id,
        "run_status": "active" if result.run.active else "stopped",
        "candidate_version": result.run.model_version,
        "rows": t.rows,
        "min_rows": rules.min_rows,
        "agreement": t.agreement,
        "served_estimated_accuracy": served,
        "candidate_estimated_accuracy": candidate,
        "accuracy_margin": rules.accuracy_margin,
        "confident_rows": t.confident_rows,
        "confident_agreement": confident,
        "min_confident_agreement": rules.min_confident_agreement,
        "checks": {
            "rows": enough,
            "estimated_accuracy": accurate,
            "confident_agreement": agrees,
        },
    }
    return section, reasons


def shadow_line(section: dict[str, Any]) -> str:
    """The shadow section in one line of text."""
    if section.get("status") != "checked":
        return f"shadow: {NO_SHADOW}"
    verdict = "passed" if section["passed"] else "FAILED"

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    return (
        f"shadow run {section['run_id']} {verdict}: {section['rows']} row(s) "
        f"(min {section['min_rows']}); estimated accuracy candidate "
        f"{num(section['candidate_estimated_accuracy'])} vs served "
        f"{num(section['served_estimated_accuracy'])} (margin "
        f"{section['accuracy_margin']:.4f}); agreement on "
        f"{section['confident_rows']} confident row(s) "
        f"{num(section['confident_agreement'])} (min "
        f"{section['min_confident_agreement']:.4f})"
    )


def gate(
    report: RegressionReport,
    *,
    max_newly_broken: int = 0,
    max_metric_drop: float = 0.01,
    allow_empty: bool = False,
    shadow: ShadowResult | None = None,
    shadow_rules: ShadowRules | None = None,
) -> GateDecision:
    """Decide on a regression report (and the candidate's shadow run, if any).

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
    shadow_section, shadow_reasons = shadow_check(shadow, shadow_rules or ShadowRules())
    reasons += shadow_reasons
    return GateDecision(
        passed=not reasons,
        reasons=reasons,
        cases=len(report.cases),
        fixed=len(report.fixed),
        broken=len(broken),
        still_failing=len(report.still_failing),
        test_rows=report.test_rows,
        shadow=shadow_section,
    )
