"""Judge a candidate pack against the served one, and promote it if it passes.

`judge_candidate` (regression run + promotion gate) is used by the `regress`
command, `Promoter` (the service's `/admin/promote`) and the retraining loop, so
all three apply the same rules to the same evidence: every active regression case
and the baseline pack's test table (a candidate cannot bring an easier test set),
replayed through the guardrail pipeline.

`Promoter` also hands the gate the candidate's newest shadow run on this
deployment (`feedback.shadow`), found by its model-store tag, when there is one.

`Promoter` never gates or serves the directory it is given: it copies the
candidate into the model store first (content-addressed, hash verified; see
`packs.model_store`), gates that copy, and serves that copy, so files changed or
swapped in the candidate's directory after the request cannot reach a worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session

from common.errors import Conflict, Unprocessable
from feedback import store
from feedback.db import SessionFactory
from feedback.gate import GateDecision, ShadowRules, gate
from feedback.regression import RegressionReport, run_regression
from feedback.replay import pack_predictor
from feedback.shadow import ShadowResult, active_run, result_for_pack, stop_run
from packs.errors import PackError
from packs.format import PackMetadata
from packs.loader import load_table
from packs.model_store import PackStore, StoredPack


class PacksIncompatible(ValueError):
    """Candidate and baseline differ in features or labels."""


@dataclass(frozen=True)
class Judgement:
    report: RegressionReport
    decision: GateDecision
    candidate_version: str
    baseline_version: str

    def to_text(self) -> str:
        # The verdict and its counts first, the full report after, the verdict
        # with its reasons last (where a terminal leaves the eye).
        return (
            f"{self.decision.headline()}\n\n{self.report.to_text()}\n\n"
            f"{self.decision.to_text()}"
        )

    def summary(self) -> dict[str, Any]:
        """JSON-safe: versions, run id, the decision and the regression summary."""
        return {
            "candidate_version": self.candidate_version,
            "baseline_version": self.baseline_version,
            "run_id": self.report.run_id,
            "gate_passed": self.decision.passed,
            "reasons": self.decision.reasons,
            "shadow": self.decision.shadow,
            "regression": self.report.summary(),
        }


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
    allow_empty: bool = False,
    shadow: ShadowResult | None = None,
    shadow_rules: ShadowRules | None = None,
) -> Judgement:
    """Run the regression suite for `candidate_dir`, store the run and the decision
    (`shadow`: the candidate's shadow run on live traffic, when it had one)."""
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
        report,
        max_newly_broken=max_newly_broken,
        max_metric_drop=max_metric_drop,
        allow_empty=allow_empty,
        shadow=shadow,
        shadow_rules=shadow_rules,
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


class ServesPacks(Protocol):
    """What promotion needs of the served state: what is served, and a swap."""

    @property
    def pack_dir(self) -> Path: ...

    @property
    def policy_path(self) -> Path: ...

    def serve_pack(self, stored: StoredPack) -> PackMetadata:
        """Serve `stored` (already gated) in every worker."""
        ...


class Promoter:
    """Gate a candidate against the served pack and swap it in if it passes."""

    def __init__(
        self,
        sessions: SessionFactory,
        served: ServesPacks,
        store: PackStore,
        *,
        max_newly_broken: int,
        max_metric_drop: float,
        out_dir: Path,
        deployment: str,
        shadow_rules: ShadowRules,
    ):
        self.sessions = sessions
        self.deployment = deployment
        self.shadow_rules = shadow_rules
        self.served = served
        self.store = store
        self.max_newly_broken = max_newly_broken
        self.max_metric_drop = max_metric_drop
        self.out_dir = out_dir

    def promote(
        self, pack_dir: str | Path, *, max_metric_drop: float | None = None
    ) -> dict[str, Any]:
        """The gate's summary with `promoted: true` and the model-store tag; 422 for
        a pack that does not store, load or fit, 409 when the gate refuses it."""
        try:
            stored = self.store.add(Path(pack_dir))
        except PackError as exc:
            raise Unprocessable(
                f"candidate pack is not loadable: {exc.message}", field="pack_dir"
            ) from None
        with self.sessions() as session:
            shadow = result_for_pack(session, self.deployment, stored.tag)
            try:
                judgement = judge_candidate(
                    session,
                    candidate_dir=stored.path,
                    baseline_dir=self.served.pack_dir,
                    policy_path=self.served.policy_path,
                    max_newly_broken=self.max_newly_broken,
                    max_metric_drop=self.max_metric_drop
                    if max_metric_drop is None
                    else max_metric_drop,
                    out_dir=self.out_dir,
                    shadow=shadow,
                    shadow_rules=self.shadow_rules,
                )
            except PacksIncompatible as exc:
                raise Unprocessable(str(exc), field="pack_dir") from None
            except PackError as exc:
                # A file the store copy holds but only the guardrails read (the
                # calibration set, say) is found wanting here: still the
                # candidate's fault, never the server's.
                raise Unprocessable(
                    f"candidate pack is not usable: {exc.message}", field="pack_dir"
                ) from None
            summary = judgement.summary()
            if not judgement.decision.passed:
                raise Conflict(
                    "the promotion gate refused the candidate: "
                    + "; ".join(judgement.decision.reasons),
                    field="pack_dir",
                    gate=summary,
                )
            meta = self.served.serve_pack(stored)
            assert judgement.report.run_id is not None
            record_promotion(session, meta, run_id=judgement.report.run_id)
            running = active_run(session, self.deployment)
            if running is not None and running.pack_tag == stored.tag:
                # Served now: in shadow it would only be compared with itself.
                stop_run(session, self.deployment)
        return {
            "promoted": True,
            "model_version": meta.version,
            "pack_tag": stored.tag,
            **summary,
        }
