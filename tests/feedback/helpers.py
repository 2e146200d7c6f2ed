"""Rows and shortcuts shared by the feedback tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from feedback import store
from feedback.log_batch import LogBatch
from feedback.log_reader import LoggedPrediction, PredictionLogReader
from feedback.models import new_prediction_id_block, utcnow
from feedback.prediction_log import PredictionLog, WriterOptions
from feedback.schemas import OutputRecord

LABELS = ["Adelie", "Chinstrap", "Gentoo"]
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
ADELIE = dict(zip(FEATURES, [39.1, 18.7, 181.0, 3750.0], strict=True))


class PredictionRecord(BaseModel):
    """One logged prediction row, given field by field (tests build rows so)."""

    id: str = ""
    """Default: an id of `created_at`'s millisecond (see `id_at`)."""
    created_at: datetime = Field(default_factory=utcnow)
    model_version: str
    policy_version: str | None = None
    context: str | None = None
    inputs: dict[str, float | None] | None = None
    outputs: OutputRecord
    trace: Any = None

    def model_post_init(self, _context: Any) -> None:
        if not self.id:
            self.id = id_at(self.created_at)


def batch_from_record(record: PredictionRecord | Mapping[str, Any]) -> LogBatch:
    """A one-row `LogBatch` holding `record` (a record or a dict of its fields)."""
    if not isinstance(record, PredictionRecord):
        record = PredictionRecord.model_validate(record)
    outputs = record.outputs
    inputs = record.inputs
    probabilities = outputs.probabilities
    return LogBatch(
        ids=[record.id],
        created_at=record.created_at.astimezone(UTC),
        model_version=record.model_version,
        policy_version=record.policy_version,
        context=record.context,
        labels=[outputs.label],
        abstained=[outputs.abstained],
        reasons=[outputs.reason],
        probabilities=None if probabilities is None else [list(probabilities.values())],
        inputs=None if inputs is None else [list(inputs.values())],
        traces=[record.trace],
        feature_names=tuple(inputs or ()),
        label_names=tuple(probabilities or ()),
    )


def submit_records(
    log: PredictionLog, records: Sequence[PredictionRecord | Mapping[str, Any]]
) -> bool:
    """Hand rows to the log one request each; False if any row was dropped."""
    return all([log.submit_batch(batch_from_record(r)) for r in records])


def prediction(
    *,
    label: str | None = "Adelie",
    inputs: dict[str, float] | None = None,
    model_version: str = "pack-v1",
    context: str | None = "Biscoe",
    store_inputs: bool = True,
    **kw: Any,
) -> PredictionRecord:
    """A logged prediction as the service would hand it over."""
    values: dict[str, float | None] | None = None
    if store_inputs:
        values = dict(inputs if inputs is not None else ADELIE)
    created_at = kw.pop("created_at", utcnow())
    return PredictionRecord(
        id=kw.pop("id", id_at(created_at)),
        created_at=created_at,
        model_version=model_version,
        policy_version="policy-1",
        context=context,
        inputs=values,
        outputs=OutputRecord(
            label=label,
            abstained=label is None,
            reason=None if label else "low_confidence",
            probabilities={"Adelie": 0.9, "Chinstrap": 0.05, "Gentoo": 0.05},
        ),
        trace=[{"stage": "input_bounds", "acted": False}],
        **kw,
    )


def log_predictions(
    log_dir: Path, records: Sequence[PredictionRecord]
) -> PredictionLogReader:
    """Write rows through the real prediction log (closed: compacted to Parquet)
    and return a reader of it."""
    log = PredictionLog(log_dir, WriterOptions(fsync_interval_s=0)).start()
    assert submit_records(log, records)
    assert log.close(timeout_s=30)
    return PredictionLogReader(log_dir)


def finder(reader: PredictionLogReader) -> Callable[[str], LoggedPrediction]:
    """How the data plane finds a report's prediction: in the log."""
    return lambda prediction_id: store.get_prediction(reader, prediction_id)


def id_at(created_at: datetime) -> str:
    """A prediction id of the millisecond `created_at` (as the service makes them
    together), so that rows backdated in tests land in segments of their time."""
    millis = int(created_at.timestamp() * 1000)
    return f"{millis:012x}7{os.urandom(10).hex()[:19]}"


def batch_of(
    n: int,
    *,
    store_inputs: bool = True,
    acted_rows: Sequence[int] = (),
    context: str | None = "Biscoe",
    coded: bool = True,
) -> LogBatch:
    """A request's rows as the service hands them over: numpy columns, a trace
    only on the rows where a guardrail acted, the first row abstained; with
    `coded`, the ids also joined and the labels and reasons also as codes (what
    lets the log append a columns record)."""
    x = np.tile(np.array([ADELIE[f] for f in FEATURES], np.float32), (n, 1))
    x[:, 0] += np.arange(n, dtype=np.float32) / 10
    probabilities = np.tile([0.9, 0.06, 0.04], (n, 1))
    labels: list[str | None] = ["Adelie"] * n
    reasons: list[str | None] = [None] * n
    labels[0], reasons[0] = None, "low_confidence"
    traces: list[Any] = [None] * n
    for i in acted_rows:
        traces[i] = [{"stage": "output_bounds", "acted": True, "row": i}]
    ids, ids_hex = new_prediction_id_block(n)
    label_codes = np.zeros(n, np.int16)
    reason_codes = np.zeros(n, np.int16)
    label_codes[0], reason_codes[0] = -1, 1
    return LogBatch(
        ids=ids,
        created_at=utcnow(),
        model_version="pack-v1",
        policy_version="policy-1",
        context=context,
        labels=labels,
        abstained=np.array([label is None for label in labels]),
        reasons=reasons,
        probabilities=probabilities,
        inputs=x if store_inputs else None,
        traces=traces,
        feature_names=tuple(FEATURES),
        label_names=tuple(LABELS),
        ids_hex=ids_hex if coded else None,
        label_codes=label_codes if coded else None,
        reason_codes=reason_codes if coded else None,
        reason_names=(None, "low_confidence") if coded else (),
    )
