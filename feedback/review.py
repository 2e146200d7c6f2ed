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
import pyarrow as pa
import pyarrow.compute as pc
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


_GOLDEN = 0x9E3779B97F4A7C15


def _mix(z: np.ndarray) -> np.ndarray:
    # splitmix64's finaliser: every input bit reaches every output bit
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sample_units(ids: pa.Array | pa.ChunkedArray | Sequence[str]) -> np.ndarray:
    """A number in [0, 1) fixed by each id: the same rows are sampled every time,
    in every process (a 64-bit mixing hash of the id's bytes, computed for a
    whole column at once)."""
    column = ids if isinstance(ids, pa.Array | pa.ChunkedArray) else pa.array(ids)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    column = column.cast(pa.large_string())
    n = len(column)
    units = np.zeros(n, dtype=np.float64)
    if n == 0:
        return units
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[
        column.offset : column.offset + n + 1
    ]
    data = np.frombuffer(data_buf or b"", dtype=np.uint8)
    lengths = np.diff(offsets)
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        size = int(length)
        if len(rows) == n and size % 8 == 0 and size:
            # The usual case (every id 32 characters): the buffer is the matrix.
            first = int(offsets[0])
            matrix = data[first : first + n * size].reshape(n, size)
        else:
            matrix = np.zeros((len(rows), max(-(-size // 8) * 8, 8)), np.uint8)
            if size:
                matrix[:, :size] = data[offsets[rows, None] + np.arange(size)]
        words = np.ascontiguousarray(matrix).view("<u8")
        h = np.full(len(rows), _GOLDEN ^ size, dtype=np.uint64)
        for j in range(words.shape[1]):
            h = _mix(h ^ words[:, j])
        units[rows] = (h >> np.uint64(11)).astype(np.float64) / 2.0**53
    return units


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


def table_margins(table: pa.Table) -> np.ndarray:
    """Top-1 minus top-2 probability of each row of a log table (NaN where it has
    no probabilities)."""
    n = table.num_rows
    if PROBABILITIES not in table.column_names:
        return np.full(n, np.nan)
    column = table[PROBABILITIES].combine_chunks()
    width = column.type.list_size
    if width < 2:
        return np.full(n, np.nan)
    # The child values of every row, null rows' included (masked below).
    values = column.values.slice(column.offset * width, n * width)
    matrix = np.asarray(values.to_numpy(zero_copy_only=False), np.float64)
    matrix = matrix.reshape(n, width)
    top2 = -np.partition(-matrix, 1, axis=1)[:, :2]
    margins = top2[:, 0] - top2[:, 1]
    if column.null_count:
        margins[~column.is_valid().to_numpy(zero_copy_only=False)] = np.nan
    return margins


#: What the sampler reads of every row to decide which ones go to review.
_DECIDING = ["id", "abstained", PROBABILITIES]


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

    Every row is looked at, in columns (a few columns of each segment, a few
    array operations per segment); only the chosen rows are read whole. At most
    `limit_items` are queued per run: abstentions first, then low-margin, then
    audit rows, each by their sample unit, so a capped run keeps a uniform sample
    of each kind rather than the oldest rows.

    Returns (items added, creation time of the last row read) so the caller can
    continue from there.
    """
    start = since if since is not None else datetime(1970, 1, 1, tzinfo=UTC)
    segments = log.segments_since(start, columns=_DECIDING)
    if not segments:
        return 0, since
    decided = [
        _Decided.of(
            table, margin=margin, sample_share=sample_share, audit_share=audit_share
        )
        for _, table in segments
    ]
    reasons: dict[str, tuple[str, float | None]] = {}
    rows: list[LoggedRow] = []
    for (f, _), ids in zip(
        segments, _first_chosen(decided, limit_items, reasons), strict=True
    ):
        if ids:
            rows += log.predictions_in(f, ids)
    last = max(d.newest for d in decided)
    return _queue(session, rows, reasons), last


@dataclass(frozen=True)
class _Decided:
    """One segment table's rows that go to review."""

    table: pa.Table
    rows: np.ndarray
    codes: np.ndarray
    units: np.ndarray
    margins: np.ndarray
    newest: datetime

    @classmethod
    def of(
        cls, table: pa.Table, *, margin: float, sample_share: float, audit_share: float
    ) -> _Decided:
        units = sample_units(table["id"])
        margins = table_margins(table)
        abstained = table["abstained"].to_numpy(zero_copy_only=False)
        codes = review_codes(
            np.asarray(abstained, dtype=bool),
            margins,
            units,
            margin=margin,
            sample_share=sample_share,
            audit_share=audit_share,
        )
        rows = np.flatnonzero(codes)
        newest = pc.max(table["created_at"]).as_py().astimezone(UTC)
        return cls(table, rows, codes[rows], units[rows], margins[rows], newest)


def _first_chosen(
    decided: list[_Decided], limit: int, reasons: dict[str, tuple[str, float | None]]
) -> list[list[str]]:
    """The ids of each segment among the `limit` first chosen rows of all (by
    reason code, then sample unit); their reasons and margins go into `reasons`."""
    codes = np.concatenate([d.codes for d in decided])
    units = np.concatenate([d.units for d in decided])
    segment_of = np.repeat(np.arange(len(decided)), [len(d.rows) for d in decided])
    at = np.concatenate([np.arange(len(d.rows)) for d in decided])
    keep = np.lexsort((units, codes))[:limit]
    chosen: list[list[str]] = []
    for k, d in enumerate(decided):
        mine = at[keep[segment_of[keep] == k]]
        ids = d.table["id"].take(d.rows[mine]).to_pylist()
        for pid, code, m in zip(ids, d.codes[mine], d.margins[mine], strict=True):
            reasons[pid] = (REASONS[code] or "", None if np.isnan(m) else float(m))
        chosen.append(ids)
    return chosen


def _queue(
    session: Session,
    rows: list[LoggedRow],
    reasons: dict[str, tuple[str, float | None]],
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
    fresh = [_item(r, *reasons[r.id]) for r in rows if r.id not in known]
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
