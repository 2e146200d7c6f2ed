"""Error analysis for one model version, from the store and the pack's own data.

    category_shares   reported errors × managed categories, with a percentages row
                      (the error-analysis spreadsheet: one column per category)
    confirmed_confusion  confirmed cases: right label × the answer given
    latest_run        the latest regression run's fixed / broken / still failing
    error_table       bias / variance / mismatch: error on training data, on the
                      train-dev split, on the test set and on production-labelled
                      data (confirmed reports and review answers)

The numbers come from what the regression report uses (`store.regression_cases`,
`regression.confusion_matrix`, a replay-mode `replay.PackPredictor`, and the
accuracy of `regression.classification_metrics`: an abstention counts as an
error), so the page, the `analysis` command and `regress` agree. `error_rate`
computes that accuracy without scikit-learn, whose import (for macro-F1) took
over 30 s on a loaded machine on the first page view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from feedback import store
from feedback.errors import store_function
from feedback.models import RegressionRun, Report
from feedback.regression import (
    ABSTAINED,
    NO_CATEGORY,
    Predictor,
    confusion_matrix,
)
from packs.format import (
    LABEL_COLUMN,
    REFERENCE_FILE,
    TEST_FILE,
    VALIDATION_FILE,
    PackMetadata,
)


def error_rate(truth: Sequence[str], answers: Sequence[str | None]) -> float:
    """1 - accuracy as `regression.classification_metrics` counts it (abstentions,
    None, are wrong)."""
    if not truth:
        return float("nan")
    right = sum(t == a for t, a in zip(truth, answers, strict=True))
    return 1.0 - right / len(truth)


@dataclass(frozen=True)
class CategoryShares:
    categories: list[str]
    """Columns: the managed categories, then any others seen, then `(none)`."""
    rows: list[dict[str, Any]]
    """One per reported error: id, answer, right label, `tags` (set of categories)."""
    counts: dict[str, int]
    shares: dict[str, float]
    """Share of the reported errors tagged with each category (0..1)."""

    @property
    def errors(self) -> int:
        return len(self.rows)


def _is_error(report: Report) -> bool:
    # A review answer that agrees with the model is a label, not an error.
    return report.label is None or report.label != report.bad_label


@store_function
def reported_errors(session: Session, *, model_version: str | None) -> list[Report]:
    """Reports against this version (all versions for None), except rejected ones
    and answers that agree with the model, newest first."""
    stmt = select(Report).where(Report.status != "rejected")
    if model_version is not None:
        stmt = stmt.where(Report.model_version == model_version)
    rows = session.scalars(stmt.order_by(Report.created_at.desc(), Report.id))
    return [r for r in rows if _is_error(r)]


def category_shares(
    reports: Sequence[Report], managed: Sequence[str]
) -> CategoryShares:
    seen = {c for r in reports for c in (r.categories or [])}
    columns = [*managed, *sorted(seen - set(managed)), NO_CATEGORY]
    rows: list[dict[str, Any]] = [
        {
            "id": r.id,
            "answer": r.bad_label or ABSTAINED,
            "label": r.label,
            "status": r.status,
            "tags": set(r.categories or []) or {NO_CATEGORY},
        }
        for r in reports
    ]
    counts = {c: sum(c in row["tags"] for row in rows) for c in columns}
    total = len(rows)
    shares = {c: (n / total if total else 0.0) for c, n in counts.items()}
    return CategoryShares(columns, rows, counts, shares)


def confirmed_confusion(
    reports: Sequence[Report], labels: Sequence[str]
) -> pd.DataFrame:
    """Confirmed (and fixed) reports: rows right label, columns the answer given."""
    done = [r for r in reports if r.status in ("confirmed", "fixed") and r.label]
    return confusion_matrix(
        [r.label for r in done if r.label], [r.bad_label for r in done], labels
    )


@store_function
def latest_run(session: Session, *, model_version: str | None) -> dict[str, Any] | None:
    """The newest regression run with this version as candidate or baseline."""
    stmt = select(RegressionRun)
    if model_version is not None:
        stmt = stmt.where(
            or_(
                RegressionRun.candidate_version == model_version,
                RegressionRun.baseline_version == model_version,
            )
        )
    run = session.scalars(
        stmt.order_by(RegressionRun.created_at.desc(), RegressionRun.id.desc())
    ).first()
    if run is None:
        return None
    s = run.summary or {}
    return {
        "id": run.id,
        "created_at": run.created_at,
        "candidate_version": run.candidate_version,
        "baseline_version": run.baseline_version,
        "passed": run.passed,
        "fixed": len(s.get("fixed", [])),
        "newly_broken": len(s.get("newly_broken", [])),
        "still_failing": len(s.get("still_failing", [])),
        "still_passing": int(s.get("still_passing", 0)),
    }


@dataclass(frozen=True)
class ErrorRow:
    name: str
    """`train`, `train-dev`, `test` or `production`."""
    source: str
    rows: int
    error: float | None
    """1 - accuracy (abstentions wrong); None when the data is not there."""


def _table_error(
    predictor: Predictor, path: Path, meta: PackMetadata
) -> tuple[int, float | None]:
    if not path.exists():
        return 0, None
    frame = pd.read_parquet(path)
    if not len(frame):
        return 0, None
    x = frame[meta.feature_names].to_numpy(dtype=np.float64)
    column = meta.context_column
    contexts: list[str | None] = (
        [None if pd.isna(v) else str(v) for v in frame[column]]
        if column and column in frame.columns
        else [None] * len(frame)
    )
    truth = frame[LABEL_COLUMN].astype(str).tolist()
    return len(frame), error_rate(truth, predictor(x, contexts))


def production_error(
    session: Session, predictor: Predictor, meta: PackMetadata
) -> tuple[int, float | None]:
    """Error on the active regression cases: confirmed reports and review answers."""
    names = meta.feature_names
    cases = [
        c
        for c in store.regression_cases(session)
        if all((c.inputs or {}).get(n) is not None for n in names)
    ]
    if not cases:
        return 0, None
    x = np.array([[float(c.inputs[n]) for n in names] for c in cases])
    answers = predictor(x, [c.context for c in cases])
    return len(cases), error_rate([c.expected_label for c in cases], answers)


def error_table(
    session: Session, *, predictor: Predictor, pack_dir: Path, meta: PackMetadata
) -> list[ErrorRow]:
    """Error on training data, train-dev, test and production-labelled data."""
    out = []
    for name, source, file in (
        ("train", "training sample (reference.parquet)", REFERENCE_FILE),
        (
            "train-dev",
            "held-out validation split (validation.parquet)",
            VALIDATION_FILE,
        ),
        ("test", "test set (test.parquet)", TEST_FILE),
    ):
        rows, error = _table_error(predictor, Path(pack_dir) / file, meta)
        out.append(ErrorRow(name, source, rows, error))
    rows, error = production_error(session, predictor, meta)
    out.append(
        ErrorRow("production", "confirmed reports and review answers", rows, error)
    )
    return out


def gaps(table: Sequence[ErrorRow]) -> dict[str, float | None]:
    """Where the error comes from: bias (train error itself), variance (train-dev −
    train), test gap (test − train-dev) and data mismatch (production − test)."""
    e = {r.name: r.error for r in table}

    def diff(a: str, b: str) -> float | None:
        x, y = e.get(a), e.get(b)
        return None if x is None or y is None else x - y

    return {
        "bias": e.get("train"),
        "variance": diff("train-dev", "train"),
        "test gap": diff("test", "train-dev"),
        "data mismatch": diff("production", "test"),
    }


def to_text(
    *,
    model_version: str | None,
    shares: CategoryShares,
    confusion: pd.DataFrame,
    run: dict[str, Any] | None,
    table: Sequence[ErrorRow],
) -> str:
    """The analysis for people: what `python -m feedback.cli analysis` prints."""
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    cols = shares.categories
    grid = pd.DataFrame(
        [["x" if c in row["tags"] else "" for c in cols] for row in shares.rows],
        columns=cols,
        index=pd.Index([row["id"][:12] for row in shares.rows], name="report"),
    )
    percent = pd.DataFrame([[pct(shares.shares[c]) for c in cols]], columns=cols)
    percent.index = pd.Index(["% of errors"], name="report")
    sheet = pd.concat([grid, percent])
    if run is None:
        run_text = "(no regression run for this version)"
    else:
        run_text = (
            f"run {run['id']}: candidate {run['candidate_version']} vs baseline "
            f"{run['baseline_version']}: fixed {run['fixed']}, newly broken "
            f"{run['newly_broken']}, still failing {run['still_failing']}, "
            f"still passing {run['still_passing']}"
        )
    errors = pd.DataFrame(
        [[r.source, r.rows, pct(r.error)] for r in table],
        columns=["data", "rows", "error"],
        index=pd.Index([r.name for r in table], name="set"),
    )
    gap_text = ", ".join(f"{k} {pct(v)}" for k, v in gaps(table).items())
    return "\n".join(
        [
            f"Error analysis for model version {model_version or '(all)'}",
            f"\nReported errors by category ({shares.errors} errors)",
            sheet.to_string() if shares.rows else "(no reported errors)",
            "\nConfirmed cases: right label (rows) x answer given (columns)",
            confusion.to_string(),
            f"\nLatest regression run\n{run_text}",
            f"\nBias / variance / mismatch\n{errors.to_string()}",
            gap_text,
        ]
    )
