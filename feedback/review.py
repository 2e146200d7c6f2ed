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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
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
from feedback.log_reader import LoggedPrediction, PredictionLogReader, SegmentRows
from feedback.log_sampling import MARGIN, REVIEW_UNIT, decision_columns, sample_units
from feedback.log_segments import PROBABILITIES
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
    """`sample_units` of one id."""
    return float(sample_units([prediction_id])[0])


#: Why a row goes to review, by code (`review_codes`); 0 is not at all.
REASONS = (None, "abstained", "low_margin", "audit")


def review_codes(
    abstained: np.ndarray,
    margins: np.ndarray,
    units: np.ndarray,
    *,
    margin: float,
    sample_share: float,
    audit_share: float,
) -> np.ndarray:
    """Each row's reason code (`REASONS`): every abstention; a `sample_share` of
    the answers whose margin is under `margin` (NaN: none known); an `audit_share`
    of the rest."""
    low = margins < margin  # NaN compares False
    codes = np.where(
        low,
        np.where(units < sample_share, 2, 0),
        np.where(units < audit_share, 3, 0),
    )
    return np.where(abstained, 1, codes).astype(np.int8)


def review_reason(
    row: LoggedRow, *, margin: float, sample_share: float, audit_share: float
) -> tuple[str | None, float | None]:
    """Why this row goes to review (`abstained`, `low_margin`, `audit`) or None."""
    row_margin = margin_of(row.outputs)
    (code,) = review_codes(
        np.array([row.abstained]),
        np.array([np.nan if row_margin is None else row_margin]),
        sample_units([row.id]),
        margin=margin,
        sample_share=sample_share,
        audit_share=audit_share,
    )
    return REASONS[code], row_margin


#: What the sampler reads of every row to decide which ones go to review: of a
#: segment the compactor wrote, the columns it added; of others, what they come
#: from.
_DECIDING = ["id", "abstained", PROBABILITIES]
_PRECOMPUTED = ["abstained", REVIEW_UNIT, MARGIN]


@store_function
def sample_review_items(
    session: Session,
    *,
    log: PredictionLogReader,
    since: datetime | None,
    margin: float,
    sample_share: float,
    audit_share: float,
    limit_items: int = 1000,
) -> tuple[int, datetime | None]:
    """Queue the rows logged after `since` that need a person (committed).

    Every row is looked at, in columns (a few narrow columns of each segment, a
    few array operations per segment); only the chosen rows are read whole. At
    most `limit_items` are queued per run: abstentions first, then low-margin,
    then audit rows, each by their sample unit, so a capped run keeps a uniform
    sample of each kind rather than the oldest rows.

    Returns (items added, creation time of the newest row read) so the caller
    can continue from there.
    """
    start = since if since is not None else datetime(1970, 1, 1, tzinfo=UTC)
    segments = log.segments_since(start, columns=_DECIDING, cheaper=_PRECOMPUTED)
    if not segments:
        return 0, since
    decided = [
        _Decided.of(
            s, margin=margin, sample_share=sample_share, audit_share=audit_share
        )
        for s in segments
    ]
    rows: list[LoggedRow] = []
    reasons: list[tuple[str, float | None]] = []
    for s, (at, why) in zip(segments, _first_chosen(decided, limit_items), strict=True):
        found = log.predictions_at(s.file, at)
        if len(found) == len(at):  # else the segment is gone (purged)
            rows += found
            reasons += why
    last = max(s.newest for s in segments)
    return _queue(session, rows, reasons), last


@dataclass(frozen=True)
class _Decided:
    """One segment's rows that go to review (by position in the segment)."""

    rows: np.ndarray
    codes: np.ndarray
    units: np.ndarray
    margins: np.ndarray

    @classmethod
    def of(
        cls,
        segment: SegmentRows,
        *,
        margin: float,
        sample_share: float,
        audit_share: float,
    ) -> _Decided:
        table = segment.table
        units, margins = decision_columns(table)
        abstained = table["abstained"].to_numpy(zero_copy_only=False)
        codes = review_codes(
            np.asarray(abstained, dtype=bool),
            margins,
            units,
            margin=margin,
            sample_share=sample_share,
            audit_share=audit_share,
        )
        if segment.newer is not None:
            codes[~segment.newer] = 0  # logged before `since`
        rows = np.flatnonzero(codes)
        return cls(rows, codes[rows], units[rows], margins[rows])


def _first_chosen(
    decided: list[_Decided], limit: int
) -> list[tuple[np.ndarray, list[tuple[str, float | None]]]]:
    """Of each segment, the positions (ascending) among the `limit` first chosen
    rows of all, by reason code then sample unit, and each one's reason and
    margin."""
    codes = np.concatenate([d.codes for d in decided])
    units = np.concatenate([d.units for d in decided])
    segment_of = np.repeat(np.arange(len(decided)), [len(d.rows) for d in decided])
    at = np.concatenate([np.arange(len(d.rows)) for d in decided])
    keep = np.lexsort((units, codes))[:limit]
    chosen = []
    for k, d in enumerate(decided):
        mine = np.sort(at[keep[segment_of[keep] == k]])
        why = [
            (REASONS[code] or "", None if np.isnan(m) else float(m))
            for code, m in zip(d.codes[mine], d.margins[mine], strict=True)
        ]
        chosen.append((d.rows[mine], why))
    return chosen


def _queue(
    session: Session,
    rows: list[LoggedRow],
    reasons: list[tuple[str, float | None]],
) -> int:
    """Add the rows not queued yet as review items (committed); how many."""
    if not rows:
        return 0
    begin_write(session)
    known: set[str] = set()
    ids = [r.id for r in rows]
    for at in range(0, len(ids), _IN_CHUNK):
        known.update(
            session.scalars(
                select(ReviewItem.prediction_id).where(
                    ReviewItem.prediction_id.in_(ids[at : at + _IN_CHUNK])
                )
            )
        )
    fresh = [
        _item(r, *why)
        for r, why in zip(rows, reasons, strict=True)
        if r.id not in known
    ]
    session.add_all(fresh)
    session.commit()
    return len(fresh)


#: Ids per `IN (...)` query (SQLite's older builds allow 999 parameters).
_IN_CHUNK = 900


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
