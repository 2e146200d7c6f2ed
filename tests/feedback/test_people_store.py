"""The store side of the admin pages: managed categories, the report filters the
queue uses, and the review queue (sampling the log, answering into a regression
case that retraining picks up). Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy.orm import Session

from feedback import categories, review, store
from feedback.errors import BadCategory, ReviewItemClosed, UnknownLabel
from feedback.log_reader import PredictionLogReader
from feedback.models import utcnow
from feedback.prediction_log import PredictionLog, WriterOptions
from feedback.retrain import corrected_rows
from feedback.schemas import OutputRecord, ReportCreate, ReportFilter
from tests.feedback.helpers import (
    ADELIE,
    FEATURES,
    LABELS,
    PredictionRecord,
    batch_of,
    finder,
    log_predictions,
    prediction,
)


def answered(
    label: str | None, probabilities: dict[str, float], **kw: Any
) -> PredictionRecord:
    return PredictionRecord(
        model_version="pack-v1",
        policy_version="policy-1",
        context="Dream",
        inputs=dict(ADELIE),
        outputs=OutputRecord(
            label=label,
            abstained=label is None,
            reason=None if label else "decision: low confidence",
            probabilities=probabilities,
        ),
        trace=[{"stage": "decision", "acted": label is None}],
        **kw,
    )


CLEAR = {"Adelie": 0.97, "Chinstrap": 0.02, "Gentoo": 0.01}
CLOSE = {"Adelie": 0.48, "Chinstrap": 0.44, "Gentoo": 0.08}


def test_category_names_are_normalised_and_added_once(session: Session) -> None:
    row, created = categories.add_category(session, name="  Similar   Species ")
    again, created_again = categories.add_category(session, name="similar species")
    assert (row.name, created, created_again) == ("similar species", True, False)
    assert again.id == row.id
    categories.add_category(session, name="blurry")
    assert categories.category_names(session) == ["blurry", "similar species"]


@pytest.mark.parametrize("name", ["", "   ", "x" * 65])
def test_category_name_out_of_bounds_is_refused(session: Session, name: str) -> None:
    with pytest.raises(BadCategory, match="1 to 64 characters"):
        categories.add_category(session, name=name)


def test_queue_filters_by_predicted_and_expected_label(
    tmp_path: Path, session: Session
) -> None:
    chinstrap = prediction(label="Chinstrap")
    gentoo = prediction(label="Gentoo")
    reader = log_predictions(tmp_path, [chinstrap, gentoo])
    for p, expected in ((chinstrap, "Adelie"), (gentoo, "Chinstrap")):
        store.create_report(
            session,
            data=ReportCreate(prediction_id=p.id, expected_label=expected),
            labels=LABELS,
            find_prediction=finder(reader),
        )

    def ids(**kw: str) -> list[str | None]:
        rows = store.list_reports(session, filter=ReportFilter(**kw))
        return [r.prediction_id for r in rows]

    assert ids(predicted_label="Chinstrap") == [chinstrap.id]
    assert ids(expected_label="Chinstrap") == [gentoo.id]
    assert ids(predicted_label="Chinstrap", expected_label="Chinstrap") == []


def test_logged_rows_reads_by_time_and_by_id(tmp_path: Path) -> None:
    old = answered("Adelie", CLEAR, created_at=utcnow() - timedelta(hours=2))
    new = answered("Adelie", CLEAR)
    reader = log_predictions(tmp_path, [old, new])
    since = utcnow() - timedelta(hours=1)
    assert [r.id for r in review.logged_rows(reader, since=since)] == [new.id]
    rows = review.logged_rows(reader, ids=[old.id])
    assert [(r.id, r.inputs) for r in rows] == [(old.id, dict(ADELIE))]
    assert review.logged_rows(reader, ids=[]) == []


def test_sampler_queues_abstentions_and_low_margin_answers_once(
    tmp_path: Path, session: Session
) -> None:
    abstained = answered(None, CLOSE)
    close = answered("Adelie", CLOSE)
    clear = answered("Adelie", CLEAR)
    reader = log_predictions(tmp_path, [abstained, close, clear])
    since = utcnow() - timedelta(minutes=5)
    kw: dict[str, Any] = {
        "log": reader,
        "margin": 0.2,
        "sample_share": 1.0,
        "audit_share": 0.0,
    }
    added, last = review.sample_review_items(session, since=since, **kw)
    assert added == 2 and last is not None
    again, _ = review.sample_review_items(session, since=since, **kw)
    assert again == 0
    items = review.list_review_items(session)
    assert [(i.prediction_id, i.reason) for i in items] == [
        (abstained.id, "abstained"),
        (close.id, "low_margin"),
    ]
    assert items[1].margin == pytest.approx(0.04)


def test_sampling_share_is_decided_by_the_id_so_it_repeats() -> None:
    rows = [
        review.LoggedRow(
            id=f"{i:032x}",
            created_at=utcnow(),
            model_version="v",
            policy_version=None,
            context=None,
            inputs=None,
            outputs={"label": "Adelie", "probabilities": CLEAR},
            label="Adelie",
            abstained=False,
            trace=None,
        )
        for i in range(2000)
    ]

    def picked() -> list[str]:
        return [
            r.id
            for r in rows
            if review.review_reason(r, margin=0.1, sample_share=1, audit_share=0.1)[0]
        ]

    first = picked()
    assert first == picked()
    assert 150 < len(first) < 250  # about a tenth of 2,000 rows


def _sample_closely(session: Session, reader: PredictionLogReader) -> Any:
    """One sampling run over the last five minutes: every low-margin row."""
    return review.sample_review_items(
        session,
        log=reader,
        since=utcnow() - timedelta(minutes=5),
        margin=0.2,
        sample_share=1.0,
        audit_share=0.0,
    )


def test_review_answer_becomes_a_regression_case_and_a_training_row(
    tmp_path: Path, session: Session
) -> None:
    row = answered(None, CLOSE)
    reader = log_predictions(tmp_path, [row])
    _sample_closely(session, reader)
    (item,) = review.list_review_items(session)
    with pytest.raises(UnknownLabel):
        review.answer_review_item(session, item.id, answer="Emperor", labels=LABELS)
    report = review.answer_review_item(
        session, item.id, answer="Chinstrap", labels=LABELS, reviewer="ana"
    )
    assert (report.status, report.corrected_label, report.bad_label) == (
        "confirmed",
        "Chinstrap",
        None,
    )
    (case,) = store.regression_cases(session)
    assert (case.report_id, case.expected_label, case.context) == (
        report.id,
        "Chinstrap",
        "Dream",
    )
    training = corrected_rows(session, feature_names=FEATURES, labels=LABELS)
    assert training["label"].tolist() == ["Chinstrap"]
    assert review.count_review_items(session) == 0
    with pytest.raises(ReviewItemClosed):
        review.answer_review_item(session, item.id, answer="Adelie", labels=LABELS)


def test_sample_units_are_one_function_of_the_id_whole_columns_or_one_at_a_time() -> (
    None
):
    ids = [f"{i:032x}" for i in range(5000)] + ["", "a", "1234567", "12345678", "x" * 9]
    column = pa.array(ids)
    together = review.sample_units(column)
    assert together.tolist() == [review.sample_unit(i) for i in ids]
    # Sliced and chunked columns read the same bytes.
    tail = review.sample_units(column.slice(4990, 15))
    assert tail.tolist() == together[4990:].tolist()
    chunked = pa.chunked_array([column.slice(0, 7), column.slice(7)])
    assert review.sample_units(chunked).tolist() == together.tolist()
    # Uniform on [0, 1) even for sequential ids: a tenth of them under 0.1.
    assert ((together >= 0) & (together < 1)).all()
    assert 400 < (together[:5000] < 0.1).sum() < 600


def _batches_logged(
    tmp_path: Path, batches: int, rows: int, *, close: bool = True
) -> tuple[Any, list[str]]:
    """`batches` requests of `rows` rows each logged (the first row of each
    abstained, the others clear answers; some rows with a trace); returns a
    reader and the abstained ids. Closed, the log is compacted to Parquet; open,
    its rows are in a write-ahead segment."""
    log = PredictionLog(tmp_path, WriterOptions(fsync_interval_s=0)).start()
    abstained = []
    for _ in range(batches):
        batch = batch_of(rows, acted_rows=range(0, rows, 7))
        abstained.append(batch.ids[0])
        assert log.submit_batch(batch)
    if close:
        assert log.close(timeout_s=30)
    else:
        assert log.flush(timeout_s=30)
        OPEN_LOGS.append(log)
    return PredictionLogReader(tmp_path), abstained


#: Logs a test left open; closed after it.
OPEN_LOGS: list[PredictionLog] = []


@pytest.fixture(autouse=True)
def _close_open_logs() -> Any:
    yield
    while OPEN_LOGS:
        OPEN_LOGS.pop().close(timeout_s=30)


@pytest.mark.parametrize("close", [True, False], ids=["compacted", "open"])
def test_sampler_looks_at_every_row_of_a_busy_window(
    tmp_path: Path, session: Session, close: bool
) -> None:
    # 24,000 rows, an abstention every 1,000: all of them go to review, the
    # last ones too, each with its own trace.
    reader, abstained = _batches_logged(tmp_path, 24, 1000, close=close)
    added, last = _sample_closely(session, reader)
    assert added == 24 and last is not None
    items = review.list_review_items(session, limit=100)
    assert sorted(i.prediction_id for i in items) == sorted(abstained)
    assert {i.reason for i in items} == {"abstained"}
    logged = {pid: reader.get(pid) for pid in abstained}
    for item in items:
        row = logged[item.prediction_id]
        assert row is not None
        assert (item.trace, item.inputs) == (row.trace, row.inputs)
        assert item.trace == [{"stage": "output_bounds", "acted": True, "row": 0}]


def test_a_capped_run_queues_abstentions_first_and_always_the_same_ones(
    tmp_path: Path, session: Session
) -> None:
    reader, abstained = _batches_logged(tmp_path, 12, 50)
    kw: dict[str, Any] = {
        "log": reader,
        "since": utcnow() - timedelta(minutes=5),
        "margin": 0.2,
        "sample_share": 1.0,
        "audit_share": 1.0,  # every other row is an audit candidate
        "limit_items": 5,
    }
    added, _ = review.sample_review_items(session, **kw)
    assert added == 5
    units = review.sample_units(abstained)
    expected = [abstained[i] for i in np.argsort(units)[:5]]
    items = review.list_review_items(session)
    assert sorted(i.prediction_id for i in items) == sorted(expected)
    # The next run's cap takes the next ones: abstentions still come first.
    added, _ = review.sample_review_items(session, **{**kw, "limit_items": 12})
    assert added == 7
    assert {i.reason for i in review.list_review_items(session)} == {"abstained"}
