"""Store functions over a session: reports, triage, cases, versions, retention.

Every function takes a `Session` first and keyword-only arguments after; writing
functions commit before they return (a 2xx then means durable), roll back on
failure, and turn an unreachable database into `DatabaseUnavailable` (503).
Logged predictions live in the prediction log (`feedback.prediction_log` writes
it, `feedback.log_reader` reads it), not in SQL: the prediction functions here
take its reader.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import (
    ColumnElement,
    Select,
    func,
    or_,
    select,
    type_coerce,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from feedback.db import begin_write
from feedback.errors import (
    BadTriageUpdate,
    DatabaseUnavailable,
    IdempotencyConflict,
    PredictionNotFound,
    ReportNotFound,
    UnknownLabel,
    store_function,
)
from feedback.idempotency import IdempotencyKey
from feedback.log_reader import LoggedPrediction, PredictionLogReader
from feedback.models import (
    ModelVersion,
    RegressionCase,
    RegressionResult,
    RegressionRun,
    Report,
    RetrainingRequest,
    utcnow,
)
from feedback.schemas import ReportCreate, ReportFilter, ReportUpdate

P = ParamSpec("P")
T = TypeVar("T")


#: Largest page offset a listing takes: past it no store holds rows, and a bigger
#: number overflows the database's 64-bit integers (a 500, not an answer).
MAX_OFFSET = 10**9


def _check_label(field: str, label: str | None, labels: Sequence[str]) -> None:
    if label is not None and label not in labels:
        raise UnknownLabel(field, label, labels)


# --- predictions -----------------------------------------------------------------


def get_prediction(log: PredictionLogReader, prediction_id: str) -> LoggedPrediction:
    """The logged prediction with this id (from any worker's segments), or
    `PredictionNotFound` (naming the sample rate when the log keeps a sample)."""
    row = log.get(prediction_id)
    if row is None:
        raise PredictionNotFound(prediction_id, sample_rate=log.sample_rate)
    return row


def count_predictions_since(log: PredictionLogReader, since: datetime) -> int:
    """Logged predictions created at or after `since`."""
    return log.count_since(since)


def purge_predictions_older_than(
    log: PredictionLogReader, days: float | None, *, max_bytes: int | None = None
) -> int:
    """Delete logged predictions older than `days` (retention, per segment) and
    the oldest segments beyond `max_bytes`; returns rows deleted."""
    if days is not None and days < 0:
        raise ValueError("days must be >= 0")
    return log.purge(older_than_days=days, max_bytes=max_bytes)


# --- reports -------------------------------------------------------------------------


def _by_key(session: Session, key: IdempotencyKey) -> Report | None:
    """The report stored under this caller's key; `IdempotencyConflict` when the
    key was used for another body."""
    row = session.scalars(
        select(Report).where(
            Report.idempotency_scope == key.scope,
            Report.idempotency_key == key.key,
        )
    ).first()
    if row is not None and row.idempotency_body_sha256 != key.body_sha256:
        raise IdempotencyConflict(key.key)
    return row


@store_function
def create_report(
    session: Session,
    *,
    data: ReportCreate,
    labels: Sequence[str],
    idempotency: IdempotencyKey | None = None,
    find_prediction: Callable[[str], LoggedPrediction] | None = None,
    default_model_version: str | None = None,
    default_policy_version: str | None = None,
) -> tuple[Report, bool]:
    """Store a report, committed before returning; returns (report, created).

    A key repeated by the same caller with the same body returns the report first
    stored under it with `created=False`, also when two requests race (the unique
    constraint decides); with another body it raises `IdempotencyConflict` (422).
    Another caller's key of the same spelling is another key.
    A report by prediction id copies what it needs of the logged row (found
    with `find_prediction`) into the report, which then outlives the log's
    retention. Raises `PredictionNotFound` for an unknown prediction id and
    `UnknownLabel` for an expected label the model does not have. Direct
    reports without a model version get `default_model_version` (the one
    served now).
    """
    # Write lock first: on SQLite a read-then-write transaction can fail outright
    # when another writer commits in between.
    begin_write(session)
    if idempotency is not None:
        existing = _by_key(session, idempotency)
        if existing is not None:
            return existing, False
    _check_label("expected_label", data.expected_label, labels)
    report = _new_report(
        data, find_prediction, default_model_version, default_policy_version
    )
    if idempotency is not None:
        report.idempotency_key = idempotency.key
        report.idempotency_scope = idempotency.scope
        report.idempotency_body_sha256 = idempotency.body_sha256
    session.add(report)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = _by_key(session, idempotency) if idempotency else None
        if existing is None:
            raise
        return existing, False
    _read_back(session, report)
    return report, True


def _read_back(session: Session, report: Report) -> None:
    """Acknowledge a report only once the database gives it back: a damaged file
    (or storage that drops writes) can take a commit it cannot return, and an
    acknowledged report that is not there is worse than a 503 the client retries
    with the same Idempotency-Key."""
    # The identity, not `report.id`: reading an expired attribute would reload
    # the row and fail differently when it is not there.
    identity = sa_inspect(report).identity
    stored = (
        None
        if identity is None
        else session.execute(
            select(Report.id).where(Report.id == identity[0])
        ).scalar_one_or_none()
    )
    if stored is None:
        raise DatabaseUnavailable("reading back the stored report")


def _new_report(
    data: ReportCreate,
    find_prediction: Callable[[str], LoggedPrediction] | None,
    default_model_version: str | None,
    default_policy_version: str | None,
) -> Report:
    common: dict[str, Any] = {
        "expected_label": data.expected_label,
        "categories": list(data.categories),
        "comment": data.comment,
        "reporter": data.reporter,
        "status": "new",
    }
    if data.prediction_id is not None:
        if find_prediction is None:
            raise PredictionNotFound(data.prediction_id)
        pred = find_prediction(data.prediction_id)
        return Report(
            prediction_id=pred.id,
            model_version=pred.model_version,
            policy_version=pred.policy_version,
            context=pred.context,
            inputs=pred.inputs,
            bad_output=pred.outputs,
            bad_label=pred.label,
            **common,
        )
    assert data.bad_output is not None  # guaranteed by ReportCreate
    return Report(
        model_version=data.model_version or default_model_version,
        policy_version=default_policy_version if data.model_version is None else None,
        context=data.context,
        inputs=data.inputs,
        bad_output=data.bad_output.model_dump(mode="json"),
        bad_label=data.bad_output.label,
        **common,
    )


@store_function
def get_report(session: Session, report_id: str) -> Report:
    row = session.get(Report, report_id)
    if row is None:
        raise ReportNotFound(report_id)
    return row


def _filtered(session: Session, stmt: Select[Any], filter: ReportFilter) -> Select[Any]:
    if filter.status is not None:
        stmt = stmt.where(Report.status == filter.status)
    if filter.model_version is not None:
        stmt = stmt.where(Report.model_version == filter.model_version)
    if filter.predicted_label is not None:
        stmt = stmt.where(Report.bad_label == filter.predicted_label)
    if filter.expected_label is not None:
        stmt = stmt.where(
            func.coalesce(Report.corrected_label, Report.expected_label)
            == filter.expected_label
        )
    if filter.label is not None:
        stmt = stmt.where(
            or_(
                Report.bad_label == filter.label,
                Report.expected_label == filter.label,
                Report.corrected_label == filter.label,
            )
        )
    if filter.category is not None:
        stmt = stmt.where(_has_category(session, filter.category))
    if filter.created_after is not None:
        stmt = stmt.where(Report.created_at >= filter.created_after)
    if filter.created_before is not None:
        stmt = stmt.where(Report.created_at < filter.created_before)
    return stmt


def _has_category(session: Session, category: str) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "postgresql":
        return type_coerce(Report.categories, JSONB).contains([category])
    values = func.json_each(Report.categories).table_valued("value")
    return select(values.c.value).where(values.c.value == category).exists()


@store_function
def list_reports(
    session: Session, *, filter: ReportFilter, limit: int = 50, offset: int = 0
) -> list[Report]:
    """Reports matching `filter`, newest first."""
    stmt = _filtered(session, select(Report), filter)
    stmt = (
        stmt.order_by(Report.created_at.desc(), Report.id).limit(limit).offset(offset)
    )
    return list(session.scalars(stmt))


@store_function
def count_reports(session: Session, *, filter: ReportFilter) -> int:
    stmt = _filtered(session, select(func.count()).select_from(Report), filter)
    return int(session.scalar(stmt) or 0)


@store_function
def update_report(
    session: Session, report_id: str, *, update: ReportUpdate, labels: Sequence[str]
) -> Report:
    """Apply a triage update, committed; keeps the report's regression case in step.

    A confirmed (or fixed) report with an input and a label (corrected, else
    expected) becomes an active regression case, or updates its existing one;
    a rejected report deactivates its case. Confirming a report without a label
    is refused: a case needs to know the right answer.
    """
    _check_label("corrected_label", update.corrected_label, labels)
    begin_write(session)
    report = session.get(Report, report_id, populate_existing=True)
    if report is None:
        raise ReportNotFound(report_id)
    if update.status is not None:
        report.status = update.status
    if update.categories is not None:
        report.categories = list(update.categories)
    if "corrected_label" in update.model_fields_set:
        report.corrected_label = update.corrected_label
    if report.status in ("confirmed", "fixed") and report.label is None:
        raise BadTriageUpdate(
            f"report {report_id} cannot be {report.status} without a label: "
            "give corrected_label",
            field="corrected_label",
        )
    sync_regression_case(report)
    session.commit()
    return report


def sync_regression_case(report: Report) -> None:
    """Make the report's regression case follow its triage state (not committed)."""
    case = report.regression_case
    wanted = report.status in ("confirmed", "fixed") and report.inputs is not None
    if not wanted:
        if case is not None:
            case.active = False
        return
    assert report.label is not None and report.inputs is not None
    if case is None:
        case = RegressionCase(inputs=report.inputs)
        # Set from the report's side: that cascades the new case into the session.
        report.regression_case = case
    case.inputs = report.inputs
    case.expected_label = report.label
    case.context = report.context
    case.categories = list(report.categories or [])
    case.model_version = report.model_version
    case.active = True


@store_function
def regression_cases(
    session: Session, *, active_only: bool = True
) -> list[RegressionCase]:
    """Regression cases in creation order (active ones only by default)."""
    stmt = select(RegressionCase).order_by(RegressionCase.id)
    if active_only:
        stmt = stmt.where(RegressionCase.active.is_(True))
    return list(session.scalars(stmt))


# --- model versions and regression runs ----------------------------------------


@store_function
def record_model_version(
    session: Session,
    *,
    name: str,
    version: str,
    metadata: dict[str, Any],
    status: str | None = None,
) -> ModelVersion:
    """Register a pack version (idempotent); `status="served"` also promotes it.

    Promoting marks the previously served version of the same name `retired`
    and sets `promoted_at`.
    """
    begin_write(session)
    row = session.scalars(
        select(ModelVersion).where(
            ModelVersion.name == name, ModelVersion.version == version
        )
    ).first()
    if row is None:
        row = ModelVersion(name=name, version=version, pack_metadata=metadata)
        session.add(row)
    if status == "served" and row.status != "served":
        for other in session.scalars(
            select(ModelVersion).where(
                ModelVersion.name == name, ModelVersion.status == "served"
            )
        ):
            other.status = "retired"
        row.promoted_at = utcnow()
    if status is not None:
        row.status = status
    try:
        session.commit()
    except IntegrityError:
        # Another worker registered the same version first: theirs is the row.
        session.rollback()
        return _model_version(session, name, version)
    return row


def _model_version(session: Session, name: str, version: str) -> ModelVersion:
    return session.scalars(
        select(ModelVersion).where(
            ModelVersion.name == name, ModelVersion.version == version
        )
    ).one()


@store_function
def set_run_decision(
    session: Session, run_id: int, *, passed: bool, reasons: Sequence[str]
) -> RegressionRun:
    """Store the gate's decision on a regression run."""
    begin_write(session)
    run = session.get(RegressionRun, run_id)
    if run is None:
        raise ValueError(f"no regression run {run_id}")
    run.passed = passed
    run.summary = {**run.summary, "gate_reasons": list(reasons)}
    session.commit()
    return run


@store_function
def mark_reports_fixed(session: Session, *, run_id: int) -> int:
    """After promoting a run's candidate: confirmed reports whose case it passes
    become `fixed`; returns how many changed (committed)."""
    begin_write(session)
    reports = session.scalars(
        select(Report)
        .join(RegressionCase, RegressionCase.report_id == Report.id)
        .join(RegressionResult, RegressionResult.case_id == RegressionCase.id)
        .where(
            RegressionResult.run_id == run_id,
            RegressionResult.candidate_ok.is_(True),
            Report.status == "confirmed",
        )
    ).all()
    for report in reports:
        report.status = "fixed"
    session.commit()
    return len(reports)


# --- retraining requests --------------------------------------------------------


@store_function
def open_retraining_request(
    session: Session,
    *,
    reason: str,
    details: dict[str, Any],
    model_version: str | None = None,
) -> RetrainingRequest:
    """Record that drift or the report rate asks for retraining (committed)."""
    begin_write(session)
    row = RetrainingRequest(
        reason=reason, details=details, model_version=model_version, status="open"
    )
    session.add(row)
    session.commit()
    return row


@store_function
def retraining_requests(
    session: Session, *, status: str | None = "open", limit: int = 50
) -> list[RetrainingRequest]:
    """Retraining requests, newest first (open ones by default)."""
    stmt = select(RetrainingRequest).order_by(RetrainingRequest.created_at.desc())
    if status is not None:
        stmt = stmt.where(RetrainingRequest.status == status)
    return list(session.scalars(stmt.limit(limit)))


@store_function
def close_retraining_request(
    session: Session, request_id: int, *, status: str = "done"
) -> RetrainingRequest:
    """Mark a request `done` (a candidate was built and gated) or `dismissed`."""
    if status not in ("done", "dismissed"):
        raise ValueError("status must be 'done' or 'dismissed'")
    begin_write(session)
    row = session.get(RetrainingRequest, request_id)
    if row is None:
        raise ValueError(f"no retraining request {request_id}")
    row.status = status
    row.closed_at = utcnow()
    session.commit()
    return row
