"""Reports in the store: creation by prediction id or by input, validation,
idempotency (also under a race), triage filters, and triage into regression cases.
Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from feedback import store
from feedback.db import make_engine, migrate, session_factory
from feedback.errors import (
    BadTriageUpdate,
    DatabaseUnavailable,
    IdempotencyConflict,
    PredictionNotFound,
    ReportNotFound,
    UnknownLabel,
)
from feedback.idempotency import IdempotencyKey, body_sha256
from feedback.models import ModelVersion, RegressionCase, Report
from feedback.schemas import (
    OutputRecord,
    ReportCreate,
    ReportFilter,
    ReportPublic,
    ReportUpdate,
)
from tests.dbservers import ThrowawayPostgres
from tests.feedback.helpers import ADELIE, LABELS, finder, log_predictions, prediction


def direct(**kw: Any) -> ReportCreate:
    """A report with the input and the bad output, no prediction id."""
    data: dict[str, Any] = {
        "inputs": dict(ADELIE),
        "bad_output": {"label": "Gentoo"},
        "expected_label": "Adelie",
    }
    data.update(kw)
    return ReportCreate.model_validate(data)


def count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Report)) or 0)


# --- creation ---------------------------------------------------------------------


def test_report_by_prediction_id_attaches_the_logged_input_and_output(
    tmp_path: Path, session: Session
) -> None:
    row = prediction(label="Gentoo", context="Dream", model_version="pack-v7")
    reader = log_predictions(tmp_path, [row])
    report, created = store.create_report(
        session,
        data=ReportCreate(prediction_id=row.id, expected_label="Chinstrap"),
        labels=LABELS,
        find_prediction=finder(reader),
    )
    assert created
    assert report.prediction_id == row.id
    assert report.inputs == ADELIE
    assert report.bad_output["label"] == "Gentoo"
    assert (report.model_version, report.context) == ("pack-v7", "Dream")
    assert report.policy_version == "policy-1"
    assert report.status == "new"


def test_report_by_prediction_id_without_stored_inputs_keeps_inputs_empty(
    tmp_path: Path, session: Session
) -> None:
    row = prediction(store_inputs=False)
    reader = log_predictions(tmp_path, [row])
    report, _ = store.create_report(
        session,
        data=ReportCreate(prediction_id=row.id),
        labels=LABELS,
        find_prediction=finder(reader),
    )
    assert report.inputs is None
    assert ReportPublic.from_row(report).inputs is None


def test_direct_report_gets_the_served_versions_when_it_names_none(
    session: Session,
) -> None:
    report, created = store.create_report(
        session,
        data=direct(context="Torgersen", categories=["Blurry ", "blurry", "night"]),
        labels=LABELS,
        default_model_version="served-3",
        default_policy_version="policy-9",
    )
    assert created
    assert (report.model_version, report.policy_version) == ("served-3", "policy-9")
    assert report.bad_label == "Gentoo"
    assert report.categories == ["blurry", "night"]
    public = ReportPublic.from_row(report)
    assert public.id == report.id and public.regression_case_id is None


def test_a_report_the_database_does_not_give_back_is_never_acknowledged(
    tmp_path: Path,
) -> None:
    # A trigger stands in for storage that takes a commit and loses the row (a
    # damaged file): the report must be a 503 to retry, never an acknowledgement.
    engine = make_engine(f"sqlite:///{tmp_path / 'lossy.db'}")
    migrate(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER lose_reports AFTER INSERT ON reports "
            "BEGIN DELETE FROM reports WHERE id = NEW.id; END"
        )
    try:
        with (
            session_factory(engine)() as lossy,
            pytest.raises(DatabaseUnavailable, match="reading back"),
        ):
            store.create_report(lossy, data=direct(), labels=LABELS)
    finally:
        engine.dispose()


def test_unknown_prediction_id_is_not_found_and_stores_nothing(
    tmp_path: Path, session: Session
) -> None:
    reader = log_predictions(tmp_path, [prediction()])
    with pytest.raises(PredictionNotFound) as err:
        store.create_report(
            session,
            data=ReportCreate(prediction_id="f" * 32),
            labels=LABELS,
            find_prediction=finder(reader),
        )
    assert err.value.status_code == 404
    assert count(session) == 0


def test_expected_label_outside_the_models_labels_is_refused(
    session: Session,
) -> None:
    with pytest.raises(UnknownLabel) as err:
        store.create_report(
            session, data=direct(expected_label="Emperor"), labels=LABELS
        )
    assert err.value.status_code == 422
    assert err.value.field == "expected_label"
    assert "Adelie" in err.value.message
    assert count(session) == 0


# --- idempotency --------------------------------------------------------------------


def key(
    name: str, body: ReportCreate | None = None, scope: str = "client:a"
) -> IdempotencyKey:
    """`name` as `scope`'s idempotency key for `body` (default: `direct()`)."""
    return IdempotencyKey.of(name, scope=scope, body=body or direct())


def test_same_idempotency_key_returns_the_first_report(session: Session) -> None:
    first, created_first = store.create_report(
        session, data=direct(), labels=LABELS, idempotency=key("key-1")
    )
    again, created_again = store.create_report(
        session, data=direct(), labels=LABELS, idempotency=key("key-1")
    )
    other, created_other = store.create_report(
        session, data=direct(), labels=LABELS, idempotency=key("key-2")
    )
    assert (created_first, created_again, created_other) == (True, False, True)
    assert again.id == first.id
    assert other.id != first.id
    assert count(session) == 2


def test_same_key_with_another_body_is_a_conflict_and_stores_nothing(
    session: Session,
) -> None:
    first = direct(comment="A's private note", reporter="alice@example.com")
    store.create_report(
        session, data=first, labels=LABELS, idempotency=key("order-42", first)
    )
    other = direct(comment="retried with a change")
    with pytest.raises(IdempotencyConflict) as err:
        store.create_report(
            session, data=other, labels=LABELS, idempotency=key("order-42", other)
        )
    assert err.value.status_code == 422
    assert err.value.field == "Idempotency-Key"
    assert "order-42" in err.value.message and "different" in err.value.message
    assert count(session) == 1


def test_the_same_key_of_another_caller_is_another_key(session: Session) -> None:
    alice = direct(comment="A's private note", reporter="alice@example.com")
    mine, _ = store.create_report(
        session, data=alice, labels=LABELS, idempotency=key("order-42", alice)
    )
    bob = direct(comment="B's note")
    theirs, created = store.create_report(
        session,
        data=bob,
        labels=LABELS,
        idempotency=key("order-42", bob, scope="client:b"),
    )
    assert created and theirs.id != mine.id
    assert (theirs.comment, theirs.reporter) == ("B's note", None)


def test_body_hash_ignores_field_order_and_omitted_defaults() -> None:
    a = ReportCreate.model_validate({"prediction_id": "p1", "comment": "x"})
    b = ReportCreate.model_validate(
        {"comment": "x", "categories": [], "prediction_id": "p1"}
    )
    c = ReportCreate.model_validate({"prediction_id": "p1", "comment": "y"})
    assert body_sha256(a) == body_sha256(b) != body_sha256(c)


def test_concurrent_submissions_with_one_key_store_one_report(
    sessions: sessionmaker[Session],
) -> None:
    threads = 8
    barrier = threading.Barrier(threads)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            with sessions() as s:
                barrier.wait()
                report, created = store.create_report(
                    s, data=direct(), labels=LABELS, idempotency=key("race")
                )
                results.append((report.id, created))
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=submit) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert errors == []
    assert len({report_id for report_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * (threads - 1) + [True]
    with sessions() as s:
        assert count(s) == 1


# --- request validation (pydantic, before the store) --------------------------------

INVALID_REPORTS: list[tuple[str, dict[str, Any]]] = [
    ("nothing", {}),
    ("inputs without output", {"inputs": ADELIE}),
    ("output without inputs", {"bad_output": {"label": "Adelie"}}),
    ("empty inputs", {"inputs": {}, "bad_output": {"label": "Adelie"}}),
    (
        "id and inputs",
        {"prediction_id": "abc", "inputs": ADELIE, "bad_output": {"label": "A"}},
    ),
    ("id and context", {"prediction_id": "abc", "context": "Dream"}),
    ("unknown field", {"prediction_id": "abc", "severity": "high"}),
    (
        "nan input",
        {"inputs": {"bill_length_mm": float("nan")}, "bad_output": {"label": "A"}},
    ),
    ("text input", {"inputs": {"bill_length_mm": "long"}, "bad_output": {}}),
    ("empty label", {"prediction_id": "abc", "expected_label": "  "}),
    ("empty category", {"prediction_id": "abc", "categories": [""]}),
    ("too many categories", {"prediction_id": "abc", "categories": ["c"] * 21}),
    ("long comment", {"prediction_id": "abc", "comment": "x" * 4001}),
    ("empty prediction id", {"prediction_id": ""}),
]


@pytest.mark.parametrize(
    "body", [b for _, b in INVALID_REPORTS], ids=[n for n, _ in INVALID_REPORTS]
)
def test_invalid_report_bodies_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ReportCreate.model_validate(body)


@pytest.mark.parametrize(
    "body",
    [{}, {"status": "closed"}, {"categories": ["x"] * 21}, {"corrected_label": ""}],
    ids=["empty", "unknown status", "too many categories", "empty label"],
)
def test_invalid_triage_updates_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ReportUpdate.model_validate(body)


# --- triage ------------------------------------------------------------------------


def test_reports_filter_by_status_category_label_and_model_version(
    session: Session,
) -> None:
    a, _ = store.create_report(
        session,
        data=direct(categories=["wrong context"], model_version="v1"),
        labels=LABELS,
    )
    b, _ = store.create_report(
        session,
        data=direct(
            categories=["blurry", "wrong context"],
            model_version="v2",
            bad_output={"label": "Chinstrap"},
            expected_label=None,
        ),
        labels=LABELS,
    )
    c, _ = store.create_report(
        session, data=direct(categories=["blurry"], model_version="v2"), labels=LABELS
    )
    store.update_report(
        session, c.id, update=ReportUpdate(status="rejected"), labels=LABELS
    )

    def ids(**kw: Any) -> set[str]:
        f = ReportFilter(**kw)
        rows = store.list_reports(session, filter=f, limit=50, offset=0)
        assert store.count_reports(session, filter=f) == len(rows)
        return {r.id for r in rows}

    assert ids() == {a.id, b.id, c.id}
    assert ids(category="Wrong Context") == {a.id, b.id}
    assert ids(category="blurry", status="new") == {b.id}
    assert ids(status="rejected") == {c.id}
    assert ids(label="Chinstrap") == {b.id}
    assert ids(label="Adelie") == {a.id, c.id}
    assert ids(model_version="v2") == {b.id, c.id}
    assert ids(category="nobody-uses-this") == set()
    page = store.list_reports(session, filter=ReportFilter(), limit=2, offset=2)
    assert len(page) == 1


def test_confirmed_report_becomes_an_active_regression_case(session: Session) -> None:
    report, _ = store.create_report(
        session,
        data=direct(context="Dream", categories=["night"]),
        labels=LABELS,
    )
    updated = store.update_report(
        session,
        report.id,
        update=ReportUpdate(
            status="confirmed", corrected_label="Chinstrap", categories=["dark"]
        ),
        labels=LABELS,
    )
    cases = store.regression_cases(session)
    assert len(cases) == 1
    case = cases[0]
    assert case.report_id == report.id
    assert case.expected_label == "Chinstrap"  # triage's label wins
    assert case.inputs == ADELIE
    assert (case.context, case.categories, case.active) == ("Dream", ["dark"], True)
    assert ReportPublic.from_row(updated).regression_case_id == case.id


def test_recorrecting_updates_the_case_and_rejecting_deactivates_it(
    session: Session,
) -> None:
    report, _ = store.create_report(session, data=direct(), labels=LABELS)
    store.update_report(
        session, report.id, update=ReportUpdate(status="confirmed"), labels=LABELS
    )
    store.update_report(
        session,
        report.id,
        update=ReportUpdate(corrected_label="Gentoo"),
        labels=LABELS,
    )
    (case,) = store.regression_cases(session)
    assert case.expected_label == "Gentoo"
    store.update_report(
        session, report.id, update=ReportUpdate(status="rejected"), labels=LABELS
    )
    assert store.regression_cases(session) == []
    all_cases = store.regression_cases(session, active_only=False)
    assert [c.active for c in all_cases] == [False]
    assert session.scalar(select(func.count()).select_from(RegressionCase)) == 1


def test_confirming_a_report_without_any_label_is_refused(session: Session) -> None:
    report, _ = store.create_report(
        session, data=direct(expected_label=None), labels=LABELS
    )
    with pytest.raises(BadTriageUpdate):
        store.update_report(
            session, report.id, update=ReportUpdate(status="confirmed"), labels=LABELS
        )
    assert store.get_report(session, report.id).status == "new"
    assert store.regression_cases(session) == []


def test_confirmed_report_without_stored_inputs_makes_no_case(
    tmp_path: Path, session: Session
) -> None:
    row = prediction(store_inputs=False)
    reader = log_predictions(tmp_path, [row])
    report, _ = store.create_report(
        session,
        data=ReportCreate(prediction_id=row.id),
        labels=LABELS,
        find_prediction=finder(reader),
    )
    store.update_report(
        session,
        report.id,
        update=ReportUpdate(status="confirmed", corrected_label="Gentoo"),
        labels=LABELS,
    )
    assert store.regression_cases(session) == []


def test_triage_refuses_unknown_labels_and_unknown_reports(session: Session) -> None:
    report, _ = store.create_report(session, data=direct(), labels=LABELS)
    with pytest.raises(UnknownLabel):
        store.update_report(
            session,
            report.id,
            update=ReportUpdate(corrected_label="Emperor"),
            labels=LABELS,
        )
    with pytest.raises(ReportNotFound):
        store.update_report(
            session, "0" * 32, update=ReportUpdate(status="fixed"), labels=LABELS
        )


def test_model_versions_are_registered_once_and_promotion_retires_the_old(
    session: Session,
) -> None:
    meta = {"labels": LABELS}
    v1 = store.record_model_version(
        session, name="penguins", version="v1", metadata=meta, status="served"
    )
    again = store.record_model_version(
        session, name="penguins", version="v1", metadata=meta
    )
    assert again.id == v1.id and again.status == "served"
    v2 = store.record_model_version(
        session, name="penguins", version="v2", metadata=meta, status="served"
    )
    session.refresh(v1)
    assert (v1.status, v2.status) == ("retired", "served")
    assert v2.promoted_at is not None
    served = session.scalars(
        select(ModelVersion.version).where(ModelVersion.status == "served")
    ).all()
    assert served == ["v2"]


def test_outputs_schema_keeps_abstentions() -> None:
    out = OutputRecord(label=None, abstained=True, reason="low_confidence")
    report = direct(bad_output=out.model_dump())
    assert report.bad_output is not None and report.bad_output.abstained


# --- database down -------------------------------------------------------------------


def test_reports_get_503_while_the_database_is_down_and_work_again_after(
    throwaway_postgres: ThrowawayPostgres,
) -> None:
    engine = make_engine(throwaway_postgres.url, connect_timeout_s=1)
    sessions = session_factory(engine)
    try:
        migrate(engine)
        with sessions() as s:
            store.create_report(s, data=direct(), labels=LABELS, idempotency=key("a"))
        throwaway_postgres.stop("immediate")
        with sessions() as s, pytest.raises(DatabaseUnavailable) as err:
            store.create_report(s, data=direct(), labels=LABELS, idempotency=key("b"))
        assert err.value.status_code == 503
        assert err.value.headers()["Retry-After"]
        throwaway_postgres.start()
        with sessions() as s:  # same engine: no restart needed
            _, created = store.create_report(
                s, data=direct(), labels=LABELS, idempotency=key("b")
            )
            assert created  # the failed attempt left nothing behind
            assert count(s) == 2
    finally:
        engine.dispose()


def test_reports_get_503_while_sqlite_is_locked_past_its_busy_timeout(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.db"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=50)
    migrate(engine)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with session_factory(engine)() as s, pytest.raises(DatabaseUnavailable):
            store.create_report(s, data=direct(), labels=LABELS)
        other.execute("ROLLBACK")
        with session_factory(engine)() as s:
            assert store.create_report(s, data=direct(), labels=LABELS)[1]
            assert count(s) == 1
    finally:
        other.close()
        engine.dispose()


def test_retraining_requests_open_and_close(session: Session) -> None:
    opened = store.open_retraining_request(
        session, reason="drift", details={"drift_share": 0.75}, model_version="v1"
    )
    assert [r.id for r in store.retraining_requests(session)] == [opened.id]
    closed = store.close_retraining_request(session, opened.id, status="done")
    assert closed.status == "done" and closed.closed_at is not None
    assert store.retraining_requests(session) == []
    assert store.retraining_requests(session, status=None)[0].details == {
        "drift_share": 0.75
    }


def test_a_damaged_sqlite_file_is_503_for_reads_and_writes(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    with session_factory(engine)() as s:
        for _ in range(50):
            store.create_report(s, data=direct(), labels=LABELS)
    engine.dispose()
    raw = bytearray(path.read_bytes())
    raw[4096:] = b"\xff" * (len(raw) - 4096)  # every page after the first
    path.write_bytes(bytes(raw))
    engine = make_engine(f"sqlite:///{path}")
    sessions = session_factory(engine)
    try:
        with sessions() as s, pytest.raises(DatabaseUnavailable) as read:
            store.list_reports(s, filter=ReportFilter(), limit=10, offset=0)
        with sessions() as s, pytest.raises(DatabaseUnavailable) as write:
            store.create_report(s, data=direct(), labels=LABELS)
        assert read.value.status_code == write.value.status_code == 503
    finally:
        engine.dispose()
