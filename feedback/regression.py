"""Replay regression cases and a test table through a candidate and a baseline.

A predictor is any callable `(features (n, d), contexts) -> labels` (None for an
abstention); `feedback.replay.pack_predictor` builds one from a pack directory and
a policy through the same guardrail pipeline the service runs. An abstention
counts as a wrong answer everywhere here: a case is passed only by its label.

The report holds what the gate and a person need: cases fixed / newly broken /
still failing, test-table metrics and their deltas, an error-analysis table (how
failing cases spread over report categories) and a confusion matrix (text and
PNG). It is stored as one `RegressionRun` with a `RegressionResult` per case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from feedback import store
from feedback.db import begin_write
from feedback.errors import translate_db_errors
from feedback.models import RegressionCase, RegressionResult, RegressionRun

Predictor = Callable[[np.ndarray, list[str | None]], list[str | None]]
ABSTAINED = "(abstained)"
NO_CATEGORY = "(none)"
METRICS = ("accuracy", "macro_f1", "coverage")


@dataclass(frozen=True)
class CaseOutcome:
    case_id: int
    report_id: str
    expected_label: str
    baseline_label: str | None
    candidate_label: str | None
    categories: tuple[str, ...]
    context: str | None

    @property
    def baseline_ok(self) -> bool:
        return self.baseline_label == self.expected_label

    @property
    def candidate_ok(self) -> bool:
        return self.candidate_label == self.expected_label


@dataclass
class RegressionReport:
    candidate_version: str
    baseline_version: str
    policy_version: str | None
    labels: list[str]
    cases: list[CaseOutcome]
    skipped_cases: dict[int, str]
    """Case id -> why it could not be replayed (e.g. a feature the pack lacks)."""
    test_rows: int
    metrics: dict[str, dict[str, float]]
    """`baseline`, `candidate` and `delta` (candidate − baseline) on the test table."""
    confusion: pd.DataFrame
    """Candidate on the test table: rows true label, columns answer."""
    error_analysis: pd.DataFrame
    confusion_png: Path | None = None
    run_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fixed(self) -> list[CaseOutcome]:
        return [c for c in self.cases if c.candidate_ok and not c.baseline_ok]

    @property
    def newly_broken(self) -> list[CaseOutcome]:
        return [c for c in self.cases if c.baseline_ok and not c.candidate_ok]

    @property
    def still_failing(self) -> list[CaseOutcome]:
        return [c for c in self.cases if not c.baseline_ok and not c.candidate_ok]

    @property
    def still_passing(self) -> list[CaseOutcome]:
        return [c for c in self.cases if c.baseline_ok and c.candidate_ok]

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary (stored on the run)."""
        return {
            "candidate_version": self.candidate_version,
            "baseline_version": self.baseline_version,
            "policy_version": self.policy_version,
            "cases": len(self.cases),
            "fixed": [c.case_id for c in self.fixed],
            "newly_broken": [c.case_id for c in self.newly_broken],
            "still_failing": [c.case_id for c in self.still_failing],
            "still_passing": len(self.still_passing),
            "skipped_cases": {str(k): v for k, v in self.skipped_cases.items()},
            "test_rows": self.test_rows,
            "metrics": self.metrics,
            "error_analysis": self.error_analysis.reset_index().to_dict("records"),
            "confusion": {
                "rows": list(self.confusion.index),
                "columns": list(self.confusion.columns),
                "counts": self.confusion.to_numpy().tolist(),
            },
            "confusion_png": str(self.confusion_png) if self.confusion_png else None,
            **self.extra,
        }

    def to_text(self) -> str:
        """The report for people (what the `regress` command prints)."""
        head = (
            f"Regression run {self.run_id}: candidate {self.candidate_version} "
            f"vs baseline {self.baseline_version} (policy {self.policy_version})"
        )
        counts = pd.DataFrame(
            {
                "cases": [
                    len(self.fixed),
                    len(self.newly_broken),
                    len(self.still_failing),
                    len(self.still_passing),
                    len(self.skipped_cases),
                ]
            },
            index=[
                "fixed",
                "newly broken",
                "still failing",
                "still passing",
                "skipped",
            ],
        )
        metrics = pd.DataFrame(self.metrics).loc[list(METRICS)]
        metrics_text = metrics.to_string(float_format="%.4f")
        parts = [
            head,
            f"\nRegression cases ({len(self.cases)} replayed)\n{counts.to_string()}",
            _case_table("Newly broken", self.newly_broken),
            _case_table("Fixed", self.fixed),
            f"\nTest table ({self.test_rows} rows)\n{metrics_text}",
            "\nError analysis: failing regression cases by category\n"
            + (
                self.error_analysis.to_string(float_format="%.2f")
                if len(self.error_analysis)
                else "(no regression cases)"
            ),
            f"\nConfusion matrix, candidate on the test table (rows: true label)\n"
            f"{self.confusion.to_string()}",
        ]
        if self.confusion_png is not None:
            parts.append(f"(image: {self.confusion_png})")
        return "\n".join(p for p in parts if p)


def _case_table(title: str, cases: list[CaseOutcome]) -> str:
    if not cases:
        return ""
    frame = pd.DataFrame(
        [
            {
                "case": c.case_id,
                "expected": c.expected_label,
                "baseline": c.baseline_label or ABSTAINED,
                "candidate": c.candidate_label or ABSTAINED,
                "categories": ", ".join(c.categories),
            }
            for c in cases
        ]
    ).set_index("case")
    return f"\n{title}\n{frame.to_string()}"


# --- the run ------------------------------------------------------------------------


def run_regression(
    session: Session,
    *,
    candidate: Predictor,
    baseline: Predictor,
    test_table: pd.DataFrame,
    labels: Sequence[str],
    feature_names: Sequence[str] | None = None,
    context_column: str | None = None,
    label_column: str = "label",
    candidate_version: str = "candidate",
    baseline_version: str = "baseline",
    policy_version: str | None = None,
    out_dir: Path | None = None,
) -> RegressionReport:
    """Replay all active regression cases and `test_table`; store and return the run.

    `feature_names` default to the test table's columns other than the label and
    context columns. `out_dir` receives the confusion-matrix PNG.
    """
    labels = list(labels)
    if feature_names is None:
        skip = {label_column, context_column}
        feature_names = [c for c in test_table.columns if c not in skip]
    names = list(feature_names)

    cases = store.regression_cases(session)
    outcomes, skipped = _replay_cases(cases, names, candidate, baseline)

    x = test_table[names].to_numpy(dtype=np.float64)
    contexts: list[str | None] = (
        [None if pd.isna(v) else str(v) for v in test_table[context_column]]
        if context_column
        else [None] * len(test_table)
    )
    y_true = test_table[label_column].astype(str).tolist()
    y_base = list(baseline(x, contexts)) if len(x) else []
    y_cand = list(candidate(x, contexts)) if len(x) else []
    base_metrics = classification_metrics(y_true, y_base, labels)
    cand_metrics = classification_metrics(y_true, y_cand, labels)
    report = RegressionReport(
        candidate_version=candidate_version,
        baseline_version=baseline_version,
        policy_version=policy_version,
        labels=labels,
        cases=outcomes,
        skipped_cases=skipped,
        test_rows=len(test_table),
        metrics={
            "baseline": base_metrics,
            "candidate": cand_metrics,
            "delta": {k: cand_metrics[k] - base_metrics[k] for k in base_metrics},
        },
        confusion=confusion_matrix(y_true, y_cand, labels),
        error_analysis=error_analysis(outcomes),
    )
    if out_dir is not None:
        report.confusion_png = write_confusion_png(
            report.confusion,
            Path(out_dir) / f"confusion-{_slug(candidate_version)}.png",
            title=f"candidate {candidate_version}",
        )
    report.run_id = _store_run(session, report)
    return report


def _replay_cases(
    cases: list[RegressionCase],
    names: list[str],
    candidate: Predictor,
    baseline: Predictor,
) -> tuple[list[CaseOutcome], dict[int, str]]:
    usable: list[RegressionCase] = []
    skipped: dict[int, str] = {}
    for case in cases:
        missing = [n for n in names if case.inputs.get(n) is None]
        if missing:
            skipped[case.id] = f"input lacks features {missing}"
        else:
            usable.append(case)
    if not usable:
        return [], skipped
    x = np.array([[float(c.inputs[n]) for n in names] for c in usable])
    contexts = [c.context for c in usable]
    base = baseline(x, contexts)
    cand = candidate(x, contexts)
    outcomes = [
        CaseOutcome(
            case_id=c.id,
            report_id=c.report_id,
            expected_label=c.expected_label,
            baseline_label=b,
            candidate_label=k,
            categories=tuple(c.categories or ()),
            context=c.context,
        )
        for c, b, k in zip(usable, base, cand, strict=True)
    ]
    return outcomes, skipped


def _store_run(session: Session, report: RegressionReport) -> int:
    with translate_db_errors("storing a regression run"):
        try:
            begin_write(session)
            run = RegressionRun(
                candidate_version=report.candidate_version,
                baseline_version=report.baseline_version,
                policy_version=report.policy_version,
                summary=report.summary(),
            )
            run.results = [
                RegressionResult(
                    case_id=c.case_id,
                    expected_label=c.expected_label,
                    baseline_label=c.baseline_label,
                    candidate_label=c.candidate_label,
                    baseline_ok=c.baseline_ok,
                    candidate_ok=c.candidate_ok,
                )
                for c in report.cases
            ]
            session.add(run)
            session.commit()
        except BaseException:
            session.rollback()
            raise
    return run.id


# --- metrics and tables -----------------------------------------------------------


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str]
) -> dict[str, float]:
    """Accuracy and macro-F1 (abstentions count as wrong) and coverage."""
    from sklearn.metrics import f1_score

    if not y_true:
        return dict.fromkeys(METRICS, float("nan"))
    pred = [p if p is not None else ABSTAINED for p in y_pred]
    correct = np.array([t == p for t, p in zip(y_true, pred, strict=True)])
    return {
        "accuracy": float(correct.mean()),
        "macro_f1": float(
            f1_score(
                y_true, pred, labels=list(labels), average="macro", zero_division=0
            )
        ),
        "coverage": float(np.mean([p is not None for p in y_pred])),
    }


def confusion_matrix(
    y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str]
) -> pd.DataFrame:
    """Counts with rows = true label, columns = answer (abstentions last)."""
    columns = [*labels, ABSTAINED]
    index = {label: i for i, label in enumerate(columns)}
    counts = np.zeros((len(labels), len(columns)), dtype=int)
    rows = {label: i for i, label in enumerate(labels)}
    for t, p in zip(y_true, y_pred, strict=True):
        if t in rows:
            counts[rows[t], index.get(p if p is not None else ABSTAINED, -1)] += 1
    return pd.DataFrame(
        counts,
        index=pd.Index(list(labels), name="true"),
        columns=pd.Index(columns, name="answer"),
    )


def error_analysis(outcomes: Sequence[CaseOutcome]) -> pd.DataFrame:
    """Per report category: cases, failing (candidate), failure rate, share of all
    failures, newly broken, fixed. A case with several categories counts in each."""
    failing_total = sum(not c.candidate_ok for c in outcomes)
    rows: dict[str, dict[str, int]] = {}
    for c in outcomes:
        for category in c.categories or (NO_CATEGORY,):
            row = rows.setdefault(
                category, {"cases": 0, "failing": 0, "newly_broken": 0, "fixed": 0}
            )
            row["cases"] += 1
            row["failing"] += not c.candidate_ok
            row["newly_broken"] += c.baseline_ok and not c.candidate_ok
            row["fixed"] += c.candidate_ok and not c.baseline_ok
    columns = ["cases", "failing", "failure_rate", "share_of_failures"]
    columns += ["newly_broken", "fixed"]
    if not rows:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="category"))
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "category"
    frame["failure_rate"] = frame["failing"] / frame["cases"]
    frame["share_of_failures"] = (
        frame["failing"] / failing_total if failing_total else 0.0
    )
    return frame[columns].sort_values(["failing", "cases"], ascending=False)


def write_confusion_png(confusion: pd.DataFrame, path: Path, *, title: str) -> Path:
    """Draw the confusion matrix with counts in the cells (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    values = confusion.to_numpy()
    fig, ax = plt.subplots(
        figsize=(1.2 * values.shape[1] + 2, 1.0 * values.shape[0] + 2)
    )
    try:
        ax.imshow(values, cmap="Blues")
        ax.set_xticks(range(values.shape[1]), list(confusion.columns), rotation=30)
        ax.set_yticks(range(values.shape[0]), list(confusion.index))
        ax.set_xlabel("answer")
        ax.set_ylabel("true label")
        ax.set_title(f"Confusion matrix: {title}")
        high = values.max() / 2 if values.size else 0
        for (i, j), v in np.ndenumerate(values):
            ax.text(
                j,
                i,
                str(v),
                ha="center",
                va="center",
                color="white" if v > high else "black",
            )
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:80]
