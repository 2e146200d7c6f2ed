"""The review queue: logged answers a person should give ("fake it before you make it").

Three kinds of rows wait here: every answer the guardrails abstained on, a sample
(`sample_share`) of low-margin answers (top-1 minus top-2 probability under
`margin`), and an audit sample (`audit_share`) of the rest. Sampling is decided by
a hash of the prediction id, so running it twice, or in two processes, picks the
same rows; a unique prediction id keeps each row in the queue once.

A person's answer is filed as a confirmed report with that label through the
triage path (`store.sync_regression_case`): it becomes a regression case and a
training row of the next retrain, exactly like a confirmed report.

The prediction log is read only through `logged_rows` (over
`feedback.log_reader.PredictionLogReader`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from feedback import store
from feedback.db import begin_write
from feedback.errors import (
    ReviewItemClosed,
    ReviewItemNotFound,
    UnknownLabel,
    store_function,
)
from feedback.log_reader import LoggedPrediction, PredictionLogReader
from feedback.models import Report, ReviewItem, utcnow

REVIEWER = "review"


LoggedRow = LoggedPrediction
"""One answered row of the prediction log, as the people's pages read it."""


def logged_rows(
    log: PredictionLogReader,
    *,
    since: datetime | None = None,
    ids: Sequence[str] | None = None,
    limit: int = 10_000,
) -> list[LoggedRow]:
    """Logged rows created after `since` (oldest first), or with these `ids`.

    The one reader of the prediction log for the admin pages and the review
    sampler.
    """
    if ids is not None:
        found = [log.get(pid) for pid in ids[:limit]]
        rows = [r for r in found if r is not None]
        if since is not None:
            rows = [r for r in rows if r.created_at > since]
        return sorted(rows, key=lambda r: (r.created_at, r.id))
    start = since if since is not None else datetime(1970, 1, 1, tzinfo=UTC)
    return log.predictions_since(start, limit=limit)


def margin_of(outputs: dict[str, Any]) -> float | None:
    """Top-1 minus top-2 probability of a logged answer (None without them)."""
    probs = (outputs or {}).get("probabilities") or {}
    values = sorted((float(v) for v in probs.values()), reverse=True)
    return values[0] - values[1] if len(values) >= 2 else None


def sample_unit(prediction_id: str) -> float:
    """A number in [0, 1) fixed by the id: the same rows are sampled every time."""
    digest = hashlib.sha256(prediction_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def review_reason(
    row: LoggedRow, *, margin: float, sample_share: float, audit_share: float
) -> tuple[str | None, float | None]:
    """Why this row goes to review (`abstained`, `low_margin`, `audit`) or None."""
    row_margin = margin_of(row.outputs)
    if row.abstained:
        return "abstained", row_margin
    unit = sample_unit(row.id)
    if row_margin is not None and row_margin < margin:
        return ("low_margin" if unit < sample_share else None), row_margin
    return ("audit" if unit < audit_share else None), row_margin


@store_function
def sample_review_items(
    session: Session,
    *,
    log: PredictionLogReader,
    since: datetime | None,
    margin: float,
    sample_share: float,
    audit_share: float,
    limit_rows: int = 10_000,
) -> tuple[int, datetime | None]:
    """Queue the rows logged after `since` that need a person (committed).

    Returns (items added, creation time of the last row read) so the caller can
    continue from there.
    """
    rows = logged_rows(log, since=since, limit=limit_rows)
    if not rows:
        return 0, since
    chosen: list[ReviewItem] = []
    for row in rows:
        reason, row_margin = review_reason(
            row, margin=margin, sample_share=sample_share, audit_share=audit_share
        )
        if reason is not None:
            chosen.append(_item(row, reason, row_margin))
    added = 0
    if chosen:
        begin_write(session)
        ids = [c.prediction_id for c in chosen]
        known = set(
            session.scalars(
                select(ReviewItem.prediction_id).where(
                    ReviewItem.prediction_id.in_(ids)
                )
            )
        )
        fresh = [c for c in chosen if c.prediction_id not in known]
        session.add_all(fresh)
        session.commit()
        added = len(fresh)
    return added, rows[-1].created_at


def _item(row: LoggedRow, reason: str, margin: float | None) -> ReviewItem:
    return ReviewItem(
        prediction_id=row.id,
        logged_at=row.created_at,
        reason=reason,
        margin=margin,
        model_version=row.model_version,
        policy_version=row.policy_version,
        context=row.context,
        inputs=row.inputs,
        outputs=row.outputs,
        label=row.label,
        trace=row.trace,
        status="pending",
    )


@store_function
def queue_label_check(
    session: Session,
    *,
    ref: str,
    inputs: dict[str, Any],
    label: str,
    model_version: str | None,
    context: str | None = None,
) -> ReviewItem:
    """Queue a row whose label looks wrong (e.g. a training row cleanlab flagged)
    for a person to answer; `ref` names it uniquely (committed, idempotent)."""
    begin_write(session)
    existing = session.scalars(
        select(ReviewItem).where(ReviewItem.prediction_id == ref)
    ).first()
    if existing is not None:
        return existing
    item = ReviewItem(
        prediction_id=ref,
        logged_at=utcnow(),
        reason="label_issue",
        model_version=model_version,
        context=context,
        inputs=inputs,
        outputs={"label": label, "labelled": True},
        label=label,
        status="pending",
    )
    session.add(item)
    session.commit()
    return item


@store_function
def list_review_items(
    session: Session,
    *,
    status: str | None = "pending",
    reason: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[ReviewItem]:
    """Review items: abstentions first, then by margin (smallest first), oldest
    first."""
    stmt = select(ReviewItem)
    if status is not None:
        stmt = stmt.where(ReviewItem.status == status)
    if reason is not None:
        stmt = stmt.where(ReviewItem.reason == reason)
    abstained_first = case((ReviewItem.reason == "abstained", 0), else_=1)
    stmt = stmt.order_by(
        abstained_first,
        func.coalesce(ReviewItem.margin, 1.0),
        ReviewItem.created_at,
        ReviewItem.id,
    )
    return list(session.scalars(stmt.limit(limit).offset(offset)))


@store_function
def count_review_items(session: Session, *, status: str | None = "pending") -> int:
    stmt = select(func.count()).select_from(ReviewItem)
    if status is not None:
        stmt = stmt.where(ReviewItem.status == status)
    return int(session.scalar(stmt) or 0)


@store_function
def get_review_item(session: Session, item_id: int) -> ReviewItem:
    row = session.get(ReviewItem, item_id)
    if row is None:
        raise ReviewItemNotFound(item_id)
    return row


@store_function
def answer_review_item(
    session: Session,
    item_id: int,
    *,
    answer: str,
    labels: Sequence[str],
    reviewer: str | None = None,
    categories: Sequence[str] = (),
) -> Report:
    """Store a person's answer as a confirmed report with that label (committed).

    The report becomes a regression case (when the row's input was stored), so the
    answer reaches `feedback.cli regress` and the next retrain.
    """
    if answer not in labels:
        raise UnknownLabel("answer", answer, labels)
    begin_write(session)
    item = session.get(ReviewItem, item_id, populate_existing=True)
    if item is None:
        raise ReviewItemNotFound(item_id)
    if item.status != "pending":
        raise ReviewItemClosed(item_id, item.status)
    report = Report(
        prediction_id=item.prediction_id,
        model_version=item.model_version,
        policy_version=item.policy_version,
        context=item.context,
        inputs=item.inputs,
        bad_output=item.outputs,
        bad_label=item.label,
        corrected_label=answer,
        categories=sorted(set(categories)),
        comment=f"review answer ({item.reason})",
        reporter=reviewer or REVIEWER,
        status="confirmed",
    )
    session.add(report)
    store.sync_regression_case(report)
    session.flush()
    item.status = "answered"
    item.answer = answer
    item.reviewer = reviewer or REVIEWER
    item.answered_at = utcnow()
    item.report_id = report.id
    session.commit()
    return report


@store_function
def skip_review_item(session: Session, item_id: int) -> ReviewItem:
    """Take an item out of the queue without an answer (committed)."""
    begin_write(session)
    item = session.get(ReviewItem, item_id, populate_existing=True)
    if item is None:
        raise ReviewItemNotFound(item_id)
    if item.status != "pending":
        raise ReviewItemClosed(item_id, item.status)
    item.status = "skipped"
    session.commit()
    return item
