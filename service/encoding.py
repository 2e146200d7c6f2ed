"""Answer encoding: one answered request as the API returns it, in rows or columns.

`rows`: `{"predictions": [one object per row]}` (`PredictResponse`).
`columns`: one list per field and one per label, and the trace per stage as one
entry for all rows but those it lists (`ColumnsPredictResponse`); no per-row
objects, so orjson writes the numpy columns directly.
Both carry `prediction_set` (label names; null when the conformal stage is off).
In columns it is written as JSON once per distinct set (`prediction_sets_json`):
a 1,000-row answer has a handful of distinct sets, and building 1,000 Python lists
of names was the largest part of encoding one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from feedback.models import PredictionIdBlock
from guardrails.pipeline import GuardedBatch
from guardrails.rowwise import row_bits

# Sets of up to this many labels are coded as bit masks in one table lookup;
# wider ones are named by `GuardedBatch.prediction_set_lists`.
_MASK_LABELS = 16


def rows_answer(
    ids: Sequence[str],
    batch: GuardedBatch,
    labels: Sequence[str],
    versions: tuple[str, str],
) -> dict[str, Any]:
    model_version, policy_version = versions
    probabilities = batch.probabilities.tolist()
    abstained = batch.abstained.tolist()
    traces = batch.traces
    as_lists = batch.prediction_set_lists(list(labels))
    sets: list[list[str] | None] = (
        [None] * len(ids) if as_lists is None else [*as_lists]
    )
    return {
        "predictions": [
            {
                "prediction_id": ids[i],
                "label": batch.labels[i],
                "abstained": abstained[i],
                "reason": batch.reasons[i],
                "probabilities": dict(zip(labels, probabilities[i], strict=True)),
                "prediction_set": sets[i],
                "model_version": model_version,
                "policy_version": policy_version,
                "trace": traces[i],
            }
            for i in range(len(ids))
        ]
    }


def columns_answer(
    ids: Sequence[str],
    batch: GuardedBatch,
    labels: Sequence[str],
    versions: tuple[str, str],
) -> dict[str, Any]:
    model_version, policy_version = versions
    by_label = np.ascontiguousarray(batch.probabilities.T)
    return {
        "model_version": model_version,
        "policy_version": policy_version,
        "columns": {
            "prediction_id": (
                orjson.Fragment(ids.json_array())
                if isinstance(ids, PredictionIdBlock)
                else ids
            ),
            "label": batch.labels,
            "abstained": batch.abstained,
            "reason": batch.reasons,
            "probabilities": dict(zip(labels, by_label, strict=True)),
            "prediction_set": prediction_sets_json(batch, labels),
        },
        "trace": [column.to_dict() for column in batch.trace_columns],
    }


def prediction_sets_json(
    batch: GuardedBatch, labels: Sequence[str]
) -> orjson.Fragment | None:
    """The rows' prediction sets as one JSON array of label-name arrays, the same
    JSON as `batch.prediction_set_lists(labels)` gives; None when there are no
    sets. Each distinct set is serialised once and the rows' copies joined."""
    sets = batch.prediction_sets
    if sets is None:
        return None
    n, k = sets.shape
    if k > _MASK_LABELS or n == 0:
        return orjson.Fragment(orjson.dumps(batch.prediction_set_lists(list(labels))))
    codes = row_bits(sets)  # label j -> bit j
    table = np.empty(1 << k, dtype=object)
    for code in np.flatnonzero(np.bincount(codes, minlength=1 << k)).tolist():
        table[code] = orjson.dumps([labels[j] for j in range(k) if code >> j & 1])
    return orjson.Fragment(b"[" + b",".join(table[codes].tolist()) + b"]")
