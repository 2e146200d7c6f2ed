"""Answer encoding: one answered request as the API returns it, in rows or columns.

`rows`: `{"predictions": [one object per row]}` (`PredictResponse`).
`columns`: one list per field and one per label, and the trace per stage as one
entry for all rows but those it lists (`ColumnsPredictResponse`); no per-row
objects, so orjson writes the numpy columns directly.
Both carry `prediction_set` (label names; null when the conformal stage is off).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from guardrails.pipeline import GuardedBatch


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
            "prediction_id": ids,
            "label": batch.labels,
            "abstained": batch.abstained,
            "reason": batch.reasons,
            "probabilities": dict(zip(labels, by_label, strict=True)),
            "prediction_set": batch.prediction_set_lists(list(labels)),
        },
        "trace": [column.to_dict() for column in batch.trace_columns],
    }
