"""Regression suite and promotion gate on real packs through the guardrail pipeline:
a deliberately worse candidate is refused, a better one passes; the CLI exits 1 on
refusal; the run is stored with one result per case."""

from __future__ import annotations

import math
import sqlite3
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from feedback import store
from feedback.cli import app
from feedback.db import make_engine, session_factory
from feedback.gate import gate
from feedback.models import RegressionResult, RegressionRun
from feedback.regression import (
    CaseOutcome,
    RegressionReport,
    classification_metrics,
    confusion_matrix,
    error_analysis,
    run_regression,
)
from feedback.replay import PackPredictor, pack_predictor
from feedback.schemas import OutputRecord, ReportCreate, ReportFilter, ReportUpdate
from feedback.served_state import write_served
from packs.loader import load_table

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "policies" / "default.yaml"


@pytest.fixture(scope="session")
def weak_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deliberately worse penguin pack: one hidden unit, three iterations."""
    from packs.build_default import build_default_pack

    out = tmp_path_factory.mktemp("packs") / "weak"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn: "did not converge", on purpose
        build_default_pack(out, hidden=(1,), max_iter=3)
    return out


@pytest.fixture(scope="session")
def strong(default_pack: Path) -> PackPredictor:
    return pack_predictor(default_pack, POLICY)


@pytest.fixture(scope="session")
def weak(weak_pack: Path) -> PackPredictor:
    return pack_predictor(weak_pack, POLICY)


@pytest.fixture(scope="session")
def test_table(default_pack: Path) -> pd.DataFrame:
    return load_table(default_pack / "test.parquet")


def confirm_cases(
    session: Session,
    table: pd.DataFrame,
    *,
    right: PackPredictor,
    wrong: PackPredictor,
    limit: int = 3,
) -> list[int]:
    """Report and confirm test rows that `right` answers correctly and `wrong` not,
    the way users and triage would; returns the regression case ids."""
    features = right.feature_names
    x = table[features].to_numpy()
    contexts = table["island"].tolist()
    by_right, by_wrong = right(x, contexts), wrong(x, contexts)
    picked = [
        i
        for i, truth in enumerate(table["label"])
        if by_right[i] == truth and by_wrong[i] != truth
    ][:limit]
    assert picked, "the weak pack should get some test rows wrong"
    case_ids = []
    for i in picked:
        row = table.iloc[i]
        report, _ = store.create_report(
            session,
            data=ReportCreate(
                inputs={f: float(row[f]) for f in features},
                bad_output=OutputRecord(label=by_wrong[i]),
                context=row["island"],
                categories=["wrong species", f"island {row['island'].lower()}"],
            ),
            labels=right.labels,
        )
        updated = store.update_report(
            session,
            report.id,
            update=ReportUpdate(status="confirmed", corrected_label=row["label"]),
            labels=right.labels,
        )
        assert updated.regression_case_id is not None
        case_ids.append(updated.regression_case_id)
    return case_ids


def test_gate_refuses_a_worse_candidate_that_breaks_cases(
    session: Session,
    strong: PackPredictor,
    weak: PackPredictor,
    test_table: pd.DataFrame,
    tmp_path: Path,
) -> None:
    case_ids = confirm_cases(session, test_table, right=strong, wrong=weak)
    report = run_regression(
        session,
        candidate=weak,
        baseline=strong,
        test_table=test_table,
        labels=strong.labels,
        feature_names=strong.feature_names,
        context_column="island",
        candidate_version=weak.version,
        baseline_version=strong.version,
        policy_version=strong.policy_version,
        out_dir=tmp_path,
    )
    assert [c.case_id for c in report.newly_broken] == case_ids
    assert report.fixed == [] and report.still_failing == []
    assert report.metrics["delta"]["accuracy"] < -0.05
    decision = gate(report, max_newly_broken=0, max_metric_drop=0.01)
    assert not decision.passed
    assert len(decision.reasons) == 3  # broken cases, accuracy, macro-F1
    assert "regression case" in decision.reasons[0]
    # Stored: one run with a result per case, then the decision.
    assert report.run_id is not None
    store.set_run_decision(
        session, report.run_id, passed=decision.passed, reasons=decision.reasons
    )
    run = session.get(RegressionRun, report.run_id)
    assert run is not None and run.passed is False
    assert run.summary["newly_broken"] == case_ids
    results = session.scalars(
        select(RegressionResult).where(RegressionResult.run_id == report.run_id)
    ).all()
    assert sorted(r.case_id for r in results) == case_ids
    assert all(r.baseline_ok and not r.candidate_ok for r in results)
    # Error analysis: every failing case carries "wrong species".
    table = report.error_analysis
    assert table.loc["wrong species", "failing"] == len(case_ids)
    assert table.loc["wrong species", "share_of_failures"] == 1.0
    assert report.confusion_png is not None and report.confusion_png.stat().st_size
    assert "Newly broken" in report.to_text()


def test_gate_passes_a_better_candidate_that_fixes_cases(
    session: Session,
    strong: PackPredictor,
    weak: PackPredictor,
    test_table: pd.DataFrame,
) -> None:
    case_ids = confirm_cases(session, test_table, right=strong, wrong=weak)
    report = run_regression(
        session,
        candidate=strong,
        baseline=weak,
        test_table=test_table,
        labels=strong.labels,
        context_column="island",
    )
    assert [c.case_id for c in report.fixed] == case_ids
    assert report.newly_broken == []
    assert report.metrics["delta"]["accuracy"] > 0.05
    decision = gate(report)
    assert decision.passed and decision.reasons == []
    # Promoted: the reports behind the fixed cases are fixed now.
    assert report.run_id is not None
    assert store.mark_reports_fixed(session, run_id=report.run_id) == len(case_ids)
    fixed = store.list_reports(session, filter=ReportFilter(status="fixed"))
    assert len(fixed) == len(case_ids)
    runs = session.scalars(select(RegressionRun.id)).all()
    assert runs == [report.run_id]


def test_regress_command_exits_1_on_refusal_and_0_on_success(
    default_pack: Path, weak_pack: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    assert runner.invoke(app, ["migrate", "--db", db]).exit_code == 0
    common = ["--db", db, "--policy", str(POLICY), "--context-column", "island"]
    refused = runner.invoke(
        app,
        [
            "regress",
            *common,
            "--candidate",
            str(weak_pack),
            "--baseline",
            str(default_pack),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert refused.exit_code == 1, refused.output
    assert "GATE FAILED" in refused.output and "Confusion matrix" in refused.output
    assert list((tmp_path / "out").glob("confusion-*.png"))
    passed = runner.invoke(
        app,
        [
            "regress",
            *common,
            "--candidate",
            str(default_pack),
            "--baseline",
            str(weak_pack),
        ],
    )
    assert passed.exit_code == 0, passed.output
    assert "GATE PASSED" in passed.output
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    purged = runner.invoke(app, ["purge", "--log-dir", str(log_dir), "--days", "30"])
    assert purged.exit_code == 0 and "deleted 0" in purged.output


def test_regress_gates_on_the_candidates_shadow_run_and_says_so(
    default_pack: Path, weak_pack: Path, tmp_path: Path
) -> None:
    from feedback import shadow as shadow_store
    from feedback.db import make_engine, session_factory
    from feedback.shadow import ShadowTally
    from packs.model_store import pack_tag

    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    assert runner.invoke(app, ["migrate", "--db", db]).exit_code == 0
    args = ["regress", "--db", db, "--policy", str(POLICY),
            "--context-column", "island", "--deployment", "live",
            "--candidate", str(default_pack), "--baseline", str(weak_pack)]  # fmt: skip
    before = runner.invoke(app, args)
    assert before.exit_code == 0, before.output
    assert "shadow: no shadow run" in before.output
    # The candidate ran in shadow on this deployment and estimated itself far
    # below the served model there.
    engine = make_engine(db)
    with session_factory(engine)() as session:
        run, _ = shadow_store.start_run(
            session, "live", pack_tag=pack_tag(default_pack), pack_sha256="0" * 64,
            model_version="cand", policy_version="pv", policy_yaml="version: x",
            served_model_version="served", sample_rate=0.1,
        )  # fmt: skip
        tally = ShadowTally(
            rows=300, agreed=300, confident_rows=300, confident_agreed=300,
            served_confidence_sum=0.95 * 300, candidate_confidence_sum=0.80 * 300,
        )  # fmt: skip
        shadow_store.write_tally(session, run.id, "w1", tally.to_json())
    engine.dispose()
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1, refused.output
    assert f"shadow run {run.id} FAILED" in refused.output
    assert "estimated accuracy" in refused.output
    # A margin that tolerates the gap lets it pass; --no-shadow leaves it out.
    tolerant = runner.invoke(app, [*args, "--shadow-accuracy-margin", "0.2"])
    assert tolerant.exit_code == 0, tolerant.output
    assert f"shadow run {run.id}" in tolerant.output
    ignored = runner.invoke(app, [*args, "--no-shadow"])
    assert ignored.exit_code == 0 and "shadow: no shadow run" in ignored.output
    # Another deployment's runs are not this one's evidence.
    other = runner.invoke(app, [*args[:-6], "--deployment", "elsewhere", *args[-4:]])
    assert other.exit_code == 0 and "shadow: no shadow run" in other.output


# --- the gate and the tables on hand-made outcomes ----------------------------------


def outcome(
    case_id: int, expected: str, base: str | None, cand: str | None, *cats: str
):
    return CaseOutcome(case_id, f"r{case_id}", expected, base, cand, tuple(cats), None)


def report_of(
    cases: list[CaseOutcome], base_acc: float, cand_acc: float
) -> RegressionReport:
    metrics = {
        "baseline": {"accuracy": base_acc, "macro_f1": base_acc, "coverage": 1.0},
        "candidate": {"accuracy": cand_acc, "macro_f1": cand_acc, "coverage": 1.0},
    }
    return RegressionReport(
        candidate_version="c",
        baseline_version="b",
        policy_version=None,
        labels=["A", "B"],
        cases=cases,
        skipped_cases={},
        test_rows=100,
        metrics=metrics,
        confusion=pd.DataFrame(),
        error_analysis=error_analysis(cases),
    )


GATE_TABLE = [
    # cases, baseline acc, candidate acc, max broken, max drop, passes
    ([outcome(1, "A", "A", "A")], 0.90, 0.90, 0, 0.01, True),
    ([outcome(1, "A", "A", "B")], 0.90, 0.90, 0, 0.01, False),
    ([outcome(1, "A", "A", "B")], 0.90, 0.90, 1, 0.01, True),
    ([outcome(1, "A", "A", None)], 0.90, 0.90, 0, 0.01, False),  # abstaining breaks
    ([outcome(1, "A", "B", "B")], 0.90, 0.90, 0, 0.01, True),  # still failing is ok
    ([], 0.90, 0.89, 0, 0.01, True),  # a drop at the tolerance passes
    ([], 0.90, 0.88, 0, 0.01, False),
    ([], 0.90, 0.88, 0, 0.05, True),
]


@pytest.mark.parametrize(
    ("cases", "base", "cand", "max_broken", "max_drop", "passes"), GATE_TABLE
)
def test_gate_rules(
    cases: list[CaseOutcome],
    base: float,
    cand: float,
    max_broken: int,
    max_drop: float,
    passes: bool,
) -> None:
    decision = gate(
        report_of(cases, base, cand),
        max_newly_broken=max_broken,
        max_metric_drop=max_drop,
    )
    assert decision.passed is passes
    assert bool(decision.reasons) is not passes


def test_error_analysis_shares_failures_by_category() -> None:
    cases = [
        outcome(1, "A", "A", "B", "blurry"),
        outcome(2, "A", "B", "B", "blurry", "night"),
        outcome(3, "A", "B", "A", "night"),
        outcome(4, "B", "B", "B"),
    ]
    table = error_analysis(cases)
    assert table.loc["blurry"].to_dict() == {
        "cases": 2,
        "failing": 2,
        "failure_rate": 1.0,
        "share_of_failures": 1.0,
        "newly_broken": 1,
        "fixed": 0,
    }
    assert table.loc["night", "failure_rate"] == 0.5
    assert table.loc["night", "fixed"] == 1
    assert table.loc["(none)", "failing"] == 0
    assert table.index[0] == "blurry"


def test_metrics_count_abstentions_as_wrong_and_confusion_has_their_column() -> None:
    y_true = ["A", "A", "B", "B"]
    y_pred = ["A", None, "B", "A"]
    metrics = classification_metrics(y_true, y_pred, ["A", "B"])
    assert metrics["accuracy"] == 0.5 and metrics["coverage"] == 0.75
    assert math.isclose(metrics["macro_f1"], (1 / 2 + 2 / 3) / 2)  # F1 A, F1 B
    matrix = confusion_matrix(y_true, y_pred, ["A", "B"])
    assert matrix.loc["A"].tolist() == [1, 0, 1]
    assert matrix.loc["B"].tolist() == [1, 1, 0]
    assert list(matrix.columns) == ["A", "B", "(abstained)"]


# --- a gate that cannot pass by accident ---------------------------------------------


def _regress(db: str, candidate: Path, baseline: Path, *extra: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(
        app,
        [
            "regress",
            "--db",
            db,
            "--candidate",
            str(candidate),
            "--baseline",
            str(baseline),
            *extra,
        ],
    )


def test_regress_refuses_a_missing_database_and_creates_none(
    default_pack: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nope" / "x.db"
    result = _regress(f"sqlite:///{missing}", default_pack, default_pack)
    assert result.exit_code == 2, result.output
    assert "no database at" in result.stderr and str(missing) in result.stderr
    assert "GATE PASSED" not in result.output
    assert not missing.exists() and not missing.parent.exists()


def test_regress_refuses_an_unmigrated_database(
    default_pack: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    result = _regress(f"sqlite:///{empty}", default_pack, default_pack)
    assert result.exit_code == 2, result.output
    assert "schema revision none (empty)" in result.stderr
    assert "feedback.cli migrate" in result.stderr
    assert "GATE PASSED" not in result.output


def test_a_gate_with_no_case_and_no_test_row_fails_unless_allowed() -> None:
    nothing = report_of([], math.nan, math.nan)
    nothing.test_rows = 0
    refused = gate(nothing)
    assert not refused.passed
    assert "nothing was replayed" in refused.reasons[0]
    assert gate(nothing, allow_empty=True).passed


def test_the_first_line_of_the_summary_counts_fixed_broken_and_still_failing() -> None:
    cases = [
        outcome(1, "A", "B", "A"),  # fixed
        outcome(2, "A", "B", "B"),  # still failing
        outcome(3, "A", "B", "B"),  # still failing
        outcome(4, "A", "A", "A"),  # still passing
    ]
    decision = gate(report_of(cases, 0.9, 0.9))
    assert decision.passed
    assert decision.to_text().splitlines()[0] == (
        "GATE PASSED: of 4 confirmed case(s) the candidate fixes 1, breaks 0, "
        "still fails 2; test set 100 row(s)"
    )


def _migrated(tmp_path: Path) -> str:
    db = f"sqlite:///{tmp_path / 'gate.db'}"
    assert CliRunner().invoke(app, ["migrate", "--db", db]).exit_code == 0
    return db


def test_regress_replays_under_the_deployments_served_policy_by_default(
    default_pack: Path, tmp_path: Path
) -> None:
    db = _migrated(tmp_path)
    policy = yaml.safe_load(POLICY.read_text())
    policy["version"] = "served-policy-7"
    with session_factory(make_engine(db))() as session:
        write_served(
            session,
            "default",
            pack_tag="penguins:x",
            pack_sha256="0" * 64,
            policy_yaml=yaml.safe_dump(policy),
            policy_source="PUT /admin/policy",
            configured="c",
        )
    result = _regress(db, default_pack, default_pack, "--allow-empty")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("GATE PASSED: of 0 confirmed")
    assert "(policy served-policy-7)" in result.stdout


def test_regress_replays_under_the_candidates_own_policy_before_anything_is_served(
    default_pack: Path, tmp_path: Path
) -> None:
    db = _migrated(tmp_path)
    own = yaml.safe_load((default_pack / "policy.yaml").read_text())["version"]
    result = _regress(db, default_pack, default_pack)
    assert result.exit_code == 0, result.output
    assert f"(policy {own})" in result.stdout
