"""Judge a candidate pack against the served one: regression run + promotion gate.

One function used by the `regress` command, the service's `/admin/promote` and the
retraining loop, so all three apply the same rules to the same evidence: every
active regression case and the baseline pack's test table (a candidate cannot
bring an easier test set), replayed through the guardrail pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from feedback import store
from feedback.gate import GateDecision, gate
from feedback.regression import RegressionReport, run_regression
from feedback.replay import pack_predictor
from packs.format import PackMetadata
from packs.loader import load_table


class PacksIncompatible(ValueError):
    """Candidate and baseline differ in features or labels."""


@dataclass(frozen=True)
class Judgement:
    report: RegressionReport
    decision: GateDecision
    candidate_version: str
    baseline_version: str

    def to_text(self) -> str:
        return f"{self.report.to_text()}\n\n{self.decision.to_text()}"


def judge_candidate(
    session: Session,
    *,
    candidate_dir: Path,
    baseline_dir: Path,
    policy_path: Path | None = None,
    test_table: Path | None = None,
    context_column: str | None = None,
    max_newly_broken: int = 0,
    max_metric_drop: float = 0.01,
    out_dir: Path | None = None,
) -> Judgement:
    """Run the regression suite for `candidate_dir`, store the run and the decision."""
    cand = pack_predictor(candidate_dir, policy_path)
    base = pack_predictor(baseline_dir, policy_path)
    if cand.feature_names != base.feature_names or cand.labels != base.labels:
        raise PacksIncompatible(
            "candidate and baseline packs differ in features or labels: "
            f"{cand.feature_names}/{cand.labels} vs {base.feature_names}/{base.labels}"
        )
    table = load_table(test_table or base.pack.test_path())
    context_column = context_column or base.pack.metadata.context_column
    if context_column is not None and context_column not in table.columns:
        context_column = None
    report = run_regression(
        session,
        candidate=cand,
        baseline=base,
        test_table=table,
        labels=cand.labels,
        feature_names=cand.feature_names,
        context_column=context_column,
        candidate_version=cand.version,
        baseline_version=base.version,
        policy_version=cand.policy_version,
        out_dir=out_dir,
    )
    decision = gate(
        report, max_newly_broken=max_newly_broken, max_metric_drop=max_metric_drop
    )
    assert report.run_id is not None
    store.set_run_decision(
        session, report.run_id, passed=decision.passed, reasons=decision.reasons
    )
    return Judgement(report, decision, cand.version, base.version)


def record_served(session: Session, meta: PackMetadata) -> None:
    """Record `meta`'s pack as the served version (idempotent)."""
    store.record_model_version(
        session,
        name=meta.name,
        version=meta.version,
        metadata=meta.model_dump(mode="json"),
        status="served",
    )


def record_promotion(session: Session, meta: PackMetadata, *, run_id: int) -> None:
    """After a candidate passed the gate and is served: record it, mark the reports
    its regression run fixed, and close the open retraining requests."""
    record_served(session, meta)
    store.mark_reports_fixed(session, run_id=run_id)
    for request in store.retraining_requests(session, status="open"):
        store.close_retraining_request(session, request.id)
