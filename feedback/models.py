"""SQLAlchemy rows of the feedback store (schema changes go through migrations).

    model_versions      every pack version seen, and which one is served
    reports             bad-result reports and their triage state
    regression_cases    confirmed reports with an input: what every model must pass
    regression_runs     one candidate-vs-baseline replay, with its gate decision
    regression_results  one row per case per run
    retraining_requests drift or report rate said "retrain" (monitoring opens them)
    served_state        per deployment: the served pack (model-store tag) and policy
    categories          the managed list of report categories
    review_items        logged answers waiting for a person's answer
    leases              which process runs a once-per-window job (see feedback.leases)
    shadow_runs         a candidate scored on sampled live traffic (feedback.shadow)
    shadow_tallies      one worker's running tallies of a shadow run

Logged predictions are not here: they live in the prediction log's segments
(`feedback.prediction_log`). A report by prediction id copies what it needs of
the logged row, so it outlives the log's retention.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, overload

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

REPORT_STATUSES = ("new", "confirmed", "rejected", "fixed")
RETRAINING_STATUSES = ("open", "acknowledged", "done", "dismissed")
MODEL_STATUSES = ("registered", "served", "retired", "refused")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A random id (uuid4 hex) for reports."""
    return uuid.uuid4().hex


def new_prediction_ids(n: int) -> list[str]:
    """`n` time-ordered ids (UUIDv7 layout, 32 hex chars) for logged predictions.

    Ids that grow with time keep the primary-key index appending at its end; with
    random uuid4 ids the log's insert rate halved once the table held 100k rows.
    One clock read and one `urandom` call serve a whole batch; large batches set
    the version and variant bits with numpy (4x faster than per-id strings).
    """
    return list(new_prediction_id_block(n)[0])


def new_prediction_id_block(n: int) -> tuple[Sequence[str], bytes]:
    """`n` ids as `new_prediction_ids` makes them, and the same ids as one ASCII
    string of 32n hex digits: what the prediction log writes, without joining
    the n strings again. From 32 ids on, the ids are a `PredictionIdBlock`, which
    makes each id's string only when it is asked for (a column answer writes
    them straight from the buffer)."""
    millis = time.time_ns() // 1_000_000 & (1 << 48) - 1
    if n < 32:
        prefix = f"{millis:012x}"
        noise = os.urandom(10 * n).hex()
        out = []
        for i in range(0, 20 * n, 20):
            r = noise[i : i + 20]
            # version 7 in the 13th hex digit, RFC 4122 variant (8-b) in the 17th
            out.append(f"{prefix}7{r[0:3]}{'89ab'[int(r[3], 16) & 3]}{r[4:19]}")
        return out, "".join(out).encode()
    raw = np.empty((n, 16), dtype=np.uint8)
    raw[:, :6] = np.frombuffer(millis.to_bytes(6, "big"), dtype=np.uint8)
    raw[:, 6:] = np.frombuffer(os.urandom(10 * n), dtype=np.uint8).reshape(n, 10)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x70  # version 7
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    joined = raw.tobytes().hex().encode()
    return PredictionIdBlock(joined), joined


class PredictionIdBlock(Sequence[str]):
    """Prediction ids held back to back in one ASCII buffer of 32 hex digits
    each; an id becomes a `str` when it is read, the whole list once."""

    __slots__ = ("_list", "hex")

    def __init__(self, joined: bytes):
        if len(joined) % 32:
            raise ValueError("an id block holds 32 hex digits per id")
        self.hex = joined
        self._list: list[str] | None = None

    def __len__(self) -> int:
        return len(self.hex) // 32

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return self.as_list()[i]
        n = len(self)
        at = i + n if i < 0 else i
        if not 0 <= at < n:
            raise IndexError("prediction id index out of range")
        return self.hex[32 * at : 32 * at + 32].decode()

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_list())

    def as_list(self) -> list[str]:
        if self._list is None:
            text = self.hex.decode()
            self._list = np.array([text]).view("U32").tolist() if text else []
        return self._list

    def json_array(self) -> bytes:
        """The ids as a JSON array of strings, built from the buffer."""
        n = len(self)
        if not n:
            return b"[]"
        cells = np.empty((n, 35), dtype=np.uint8)
        cells[:, 0] = cells[:, 33] = ord('"')
        cells[:, 1:33] = np.frombuffer(self.hex, dtype=np.uint8).reshape(n, 32)
        cells[:, 34] = ord(",")
        return b"[" + cells.tobytes()[:-1] + b"]"


def new_prediction_id() -> str:
    """One id as `new_prediction_ids` makes them."""
    return new_prediction_ids(1)[0]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Any
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite compares datetimes as text: store them all in one offset-free form.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: datetime | None, dialect: Any
    ) -> datetime | None:
        if value is None:
            return None
        return (
            value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        )


# JSONB on PostgreSQL: binary, indexable, and supports containment (`@>`) for
# category filters; plain JSON text on SQLite.
# `none_as_null`: Python None is SQL NULL (not the JSON text 'null'), so that
# "inputs not stored" is visible to IS NULL.
JsonType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


# Named constraints, so later migrations can alter them (SQLite batch mode needs names).
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(200))
    pack_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JsonType)
    status: Mapped[str] = mapped_column(String(16), default="registered")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(default=None)


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (
        Index("ix_reports_status_created_at", "status", "created_at"),
        Index("ix_reports_model_version", "model_version"),
        Index("ix_reports_created_at", "created_at"),
        Index("ix_reports_prediction_id", "prediction_id"),
        UniqueConstraint("idempotency_scope", "idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    prediction_id: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(200))
    policy_version: Mapped[str | None] = mapped_column(String(200))
    context: Mapped[str | None] = mapped_column(String(200))
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    bad_output: Mapped[dict[str, Any]] = mapped_column(JsonType)
    bad_label: Mapped[str | None] = mapped_column(String(200))
    expected_label: Mapped[str | None] = mapped_column(String(200))
    corrected_label: Mapped[str | None] = mapped_column(String(200))
    categories: Mapped[list[str]] = mapped_column(JsonType, default=list)
    comment: Mapped[str | None] = mapped_column(Text)
    reporter: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="new")
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # A key is unique per caller (see feedback.idempotency), and bound to the
    # sha256 of the body first sent with it.
    idempotency_scope: Mapped[str | None] = mapped_column(String(100))
    idempotency_body_sha256: Mapped[str | None] = mapped_column(String(64))

    regression_case: Mapped[RegressionCase | None] = relationship(
        back_populates="report", lazy="selectin", uselist=False
    )

    @property
    def label(self) -> str | None:
        """The right answer as far as we know: triage's, else the reporter's."""
        return self.corrected_label or self.expected_label

    @property
    def regression_case_id(self) -> int | None:
        return self.regression_case.id if self.regression_case is not None else None


class RegressionCase(Base):
    __tablename__ = "regression_cases"
    __table_args__ = (Index("ix_regression_cases_active", "active"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    report_id: Mapped[str] = mapped_column(ForeignKey("reports.id"), unique=True)
    inputs: Mapped[dict[str, Any]] = mapped_column(JsonType)
    expected_label: Mapped[str] = mapped_column(String(200))
    context: Mapped[str | None] = mapped_column(String(200))
    categories: Mapped[list[str]] = mapped_column(JsonType, default=list)
    model_version: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    report: Mapped[Report] = relationship(back_populates="regression_case")


class RegressionRun(Base):
    __tablename__ = "regression_runs"
    __table_args__ = (Index("ix_regression_runs_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    candidate_version: Mapped[str] = mapped_column(String(200))
    baseline_version: Mapped[str] = mapped_column(String(200))
    policy_version: Mapped[str | None] = mapped_column(String(200))
    passed: Mapped[bool | None] = mapped_column(Boolean, default=None)
    summary: Mapped[dict[str, Any]] = mapped_column(JsonType)

    results: Mapped[list[RegressionResult]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )


class RegressionResult(Base):
    __tablename__ = "regression_results"
    __table_args__ = (Index("ix_regression_results_run_id", "run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("regression_runs.id", ondelete="CASCADE")
    )
    case_id: Mapped[int] = mapped_column(ForeignKey("regression_cases.id"))
    expected_label: Mapped[str] = mapped_column(String(200))
    baseline_label: Mapped[str | None] = mapped_column(String(200))
    candidate_label: Mapped[str | None] = mapped_column(String(200))
    baseline_ok: Mapped[bool] = mapped_column(Boolean)
    candidate_ok: Mapped[bool] = mapped_column(Boolean)

    run: Mapped[RegressionRun] = relationship(back_populates="results")


class RetrainingRequest(Base):
    __tablename__ = "retraining_requests"
    __table_args__ = (
        Index("ix_retraining_requests_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(String(200))
    """What asked for it, e.g. `drift` or `report_rate`."""
    details: Mapped[dict[str, Any]] = mapped_column(JsonType)
    model_version: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="open")
    closed_at: Mapped[datetime | None] = mapped_column(default=None)
    acknowledged_at: Mapped[datetime | None] = mapped_column(default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)
    """What the person who acknowledged or closed it wrote."""


class ServedStateRow(Base):
    """What one deployment serves; see feedback.served_state."""

    __tablename__ = "served_state"

    deployment: Mapped[str] = mapped_column(String(200), primary_key=True)
    pack_tag: Mapped[str] = mapped_column(String(200))
    """The pack's entry in the model store (`name:content-hash`)."""
    pack_sha256: Mapped[str] = mapped_column(String(64))
    policy_yaml: Mapped[str] = mapped_column(Text)
    policy_source: Mapped[str] = mapped_column(String(1000))
    """Where the policy came from: the pack, a settings path, or an admin PUT."""
    configured: Mapped[str] = mapped_column(String(200))
    """Fingerprint of the settings that chose the initial pack and policy."""
    revision: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- the people's side: managed categories and the review queue -----------------

REVIEW_REASONS = ("abstained", "low_margin", "audit", "label_issue")
REVIEW_STATUSES = ("pending", "answered", "skipped")


class Category(Base):
    """A report category triage may tag; the category metric counts these by name."""

    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewItem(Base):
    """A logged answer waiting for a person: abstained, low-margin or audit-sampled.

    It keeps its own copy of the logged input and answer, so it outlives the
    prediction log's retention. Answering it files a confirmed report (with the
    person's label) through the triage path: it becomes a regression case.
    """

    __tablename__ = "review_items"
    __table_args__ = (
        Index("ix_review_items_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    prediction_id: Mapped[str] = mapped_column(String(64), unique=True)
    logged_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(16))
    margin: Mapped[float | None] = mapped_column(Float)
    """Top-1 minus top-2 probability of the logged answer."""
    model_version: Mapped[str | None] = mapped_column(String(200))
    policy_version: Mapped[str | None] = mapped_column(String(200))
    context: Mapped[str | None] = mapped_column(String(200))
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    outputs: Mapped[dict[str, Any]] = mapped_column(JsonType)
    label: Mapped[str | None] = mapped_column(String(200))
    """What the model answered (None when it abstained)."""
    trace: Mapped[Any | None] = mapped_column(JsonType)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    answer: Mapped[str | None] = mapped_column(String(200))
    reviewer: Mapped[str | None] = mapped_column(String(200))
    answered_at: Mapped[datetime | None] = mapped_column(default=None)
    report_id: Mapped[str | None] = mapped_column(ForeignKey("reports.id"))
    """The confirmed report the answer was filed as."""


class Lease(Base):
    """One row per job name: who may run it now, and up to when its work is done."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    """The process holding (or last holding) the lease: host, pid and a nonce."""
    token: Mapped[int] = mapped_column(BigInteger)
    """Fencing token: grows by one each time the lease changes hands."""
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    done_until: Mapped[datetime | None] = mapped_column(default=None)
    """End of the last window whose run completed (None before the first)."""


class JobStateRow(Base):
    """The JSON state of one once-per-window job (see feedback.job_state)."""

    __tablename__ = "job_state"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JsonType)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ShadowRunRow(Base):
    """A candidate pack run beside the served one on sampled traffic; the active
    run of a deployment is its row with no `stopped_at` (see feedback.shadow)."""

    __tablename__ = "shadow_runs"
    __table_args__ = (Index("ix_shadow_runs_deployment_id", "deployment", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment: Mapped[str] = mapped_column(String(200))
    pack_tag: Mapped[str] = mapped_column(String(200))
    """The candidate's entry in the model store (`name:content-hash`)."""
    pack_sha256: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(200))
    policy_version: Mapped[str] = mapped_column(String(200))
    policy_yaml: Mapped[str] = mapped_column(Text)
    """The candidate's own policy, as every worker builds its pipeline from it."""
    served_model_version: Mapped[str] = mapped_column(String(200))
    """What was served when the run started."""
    sample_rate: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(default=None)


class ShadowTallyRow(Base):
    """One worker's running tallies of a shadow run (replaced as they grow)."""

    __tablename__ = "shadow_tallies"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("shadow_runs.id", ondelete="CASCADE"), primary_key=True
    )
    worker: Mapped[str] = mapped_column(String(200), primary_key=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    tallies: Mapped[dict[str, Any]] = mapped_column(JsonType)
