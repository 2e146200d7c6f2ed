"""Error analysis from the store: category shares with a percentages row, the
confusion of confirmed cases, the latest run, the bias / variance / mismatch
table, and the `analysis` command printing the same numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from feedback import analysis, categories, store
from feedback.cli import app
from feedback.regression import classification_metrics
from feedback.replay import pack_predictor
from feedback.schemas import OutputRecord, ReportCreate, ReportUpdate
from packs.format import VALIDATION_FILE
from tests.feedback.helpers import ADELIE, LABELS


def file_report(
    session: Session,
    *,
    said: str | None,
    right: str,
    tags: list[str],
    status: str = "new",
    version: str = "v1",
) -> str:
    report, _ = store.create_report(
        session,
        data=ReportCreate(
            inputs=dict(ADELIE),
            bad_output=OutputRecord(label=said, abstained=said is None),
            expected_label=right,
            categories=tags,
            model_version=version,
        ),
        labels=LABELS,
    )
    if status != "new":
        store.update_report(
            session, report.id, update=ReportUpdate(status=status), labels=LABELS
        )
    return report.id


@pytest.mark.parametrize(
    ("truth", "answers"),
    [
        (["a", "b", "c"], ["a", "b", "c"]),
        (["a", "b", "c", "a"], ["a", None, "b", "a"]),
        (["a"], [None]),
    ],
)
def test_error_rate_is_one_minus_the_regression_reports_accuracy(
    truth: list[str], answers: list[str | None]
) -> None:
    expected = 1 - classification_metrics(truth, answers, ["a", "b", "c"])["accuracy"]
    assert analysis.error_rate(truth, answers) == pytest.approx(expected)


def test_category_shares_count_each_reported_error_once_per_tag(
    session: Session,
) -> None:
    categories.add_category(session, name="similar species")
    categories.add_category(session, name="unused")
    file_report(session, said="Chinstrap", right="Adelie", tags=["similar species"])
    file_report(session, said="Gentoo", right="Adelie", tags=["similar species", "dim"])
    file_report(session, said=None, right="Gentoo", tags=[])
    file_report(session, said="Adelie", right="Gentoo", tags=["dim"], status="rejected")
    file_report(session, said="Adelie", right="Adelie", tags=["dim"])  # agrees
    file_report(session, said="Adelie", right="Gentoo", tags=["dim"], version="v2")

    reports = analysis.reported_errors(session, model_version="v1")
    shares = analysis.category_shares(reports, categories.category_names(session))
    assert shares.errors == 3
    assert shares.categories == ["similar species", "unused", "dim", "(none)"]
    assert shares.counts == {"similar species": 2, "unused": 0, "dim": 1, "(none)": 1}
    assert shares.shares["similar species"] == pytest.approx(2 / 3)


def test_confusion_of_confirmed_cases_and_latest_run(session: Session) -> None:
    file_report(session, said="Chinstrap", right="Adelie", tags=[], status="confirmed")
    file_report(session, said="Gentoo", right="Adelie", tags=[])  # not confirmed
    reports = analysis.reported_errors(session, model_version="v1")
    confusion = analysis.confirmed_confusion(reports, LABELS)
    assert int(confusion.loc["Adelie", "Chinstrap"]) == 1
    assert int(confusion.to_numpy().sum()) == 1
    assert analysis.latest_run(session, model_version="v1") is None


def test_error_table_reads_the_packs_splits_and_production_labels(
    session: Session, default_pack: Path
) -> None:
    predictor = pack_predictor(default_pack)
    meta = predictor.pack.metadata
    table = analysis.error_table(
        session, predictor=predictor, pack_dir=default_pack, meta=meta
    )
    rows = {r.name: r for r in table}
    assert rows["train-dev"].rows == len(
        pd.read_parquet(default_pack / VALIDATION_FILE)
    )
    assert all(0 <= (rows[n].error or 0) < 0.1 for n in ("train", "train-dev", "test"))
    assert (rows["production"].rows, rows["production"].error) == (0, None)
    # A confirmed case whose right label the model never gives: production error 1.
    file_report(session, said="Adelie", right="Gentoo", tags=[], status="confirmed")
    table = analysis.error_table(
        session, predictor=predictor, pack_dir=default_pack, meta=meta
    )
    production = table[-1]
    assert (production.rows, production.error) == (1, 1.0)
    gaps = analysis.gaps(table)
    assert gaps["data mismatch"] == pytest.approx(1.0 - (table[2].error or 0))


def test_analysis_command_prints_the_same_numbers(
    engine: Engine, session: Session, default_pack: Path, db_url: str
) -> None:
    version = pack_predictor(default_pack).version
    file_report(
        session,
        said="Adelie",
        right="Gentoo",
        tags=["similar species"],
        status="confirmed",
        version=version,
    )
    result = CliRunner().invoke(
        app, ["analysis", "--db", db_url, "--pack", str(default_pack)]
    )
    assert result.exit_code == 0, result.output
    assert "% of errors" in result.output
    assert "100.0%" in result.output  # the one error is tagged "similar species"
    assert "train-dev" in result.output and "production" in result.output
