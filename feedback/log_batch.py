"""What one request hands to the prediction log: its rows as columns, not row dicts.

A `LogBatch` holds references to arrays the request already computed (ids,
answers, probabilities, inputs, traces), so handing it over costs the request
nothing per row. The prediction log appends it as one record: a rows record for
a small request (`feedback.log_segments.row_record`), an Arrow record batch for a
large one (`feedback.log_segments.to_record_batch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from guardrails.pipeline import REASON_NAMES, GuardedBatch


@dataclass(frozen=True)
class LogBatch:
    """Rows predicted together: one request, one model and policy version."""

    ids: Sequence[str]
    created_at: datetime
    model_version: str
    policy_version: str | None
    context: str | None
    labels: Sequence[str | None]
    """The answer per row (None when abstained)."""
    abstained: Sequence[bool] | np.ndarray
    reasons: Sequence[str | None]
    probabilities: np.ndarray | Sequence[Sequence[float] | None] | None
    """(n, k) in `label_names` order, or None when not known."""
    inputs: np.ndarray | Sequence[Sequence[float | None] | None] | None
    """(n, d) in `feature_names` order, or None when inputs may not be stored."""
    traces: Sequence[Any] | None
    """Guardrail trace per row (None for a row means no stage acted on it)."""
    feature_names: tuple[str, ...]
    label_names: tuple[str, ...]
    # What the request computed the columns above from, when it did: with them
    # a large request is appended as raw buffers (`log_segments.column_record`)
    # instead of being turned into Arrow string columns on the request path.
    ids_hex: bytes | None = None
    """`ids` as one ASCII string of 32-hex-digit ids."""
    label_codes: np.ndarray | None = None
    """(n,) `labels` as indexes into `label_names` (-1: None)."""
    reason_codes: np.ndarray | None = None
    """(n,) `reasons` as indexes into `reason_names`."""
    reason_names: tuple[str | None, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def shape_key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Batches with the same key are written by the same statement."""
        return self.feature_names, self.label_names

    def head(self, k: int) -> LogBatch:
        """The first `k` rows."""
        return self if k >= len(self) else self._slice(0, k)

    def rows(self) -> list[LogBatch]:
        """One batch per row (to find the one row a database refuses)."""
        return [self._slice(i, i + 1) for i in range(len(self))]

    def _slice(self, start: int, stop: int) -> LogBatch:
        def cut(values: Any) -> Any:
            return None if values is None else values[start:stop]

        return replace(
            self,
            ids=self.ids[start:stop],
            ids_hex=None
            if self.ids_hex is None
            else self.ids_hex[32 * start : 32 * stop],
            label_codes=cut(self.label_codes),
            reason_codes=cut(self.reason_codes),
            labels=self.labels[start:stop],
            abstained=self.abstained[start:stop],
            reasons=self.reasons[start:stop],
            probabilities=cut(self.probabilities),
            inputs=cut(self.inputs),
            traces=cut(self.traces),
        )


def answered_batch(
    ids: Sequence[str],
    batch: GuardedBatch,
    features: np.ndarray,
    *,
    context: str | None,
    versions: tuple[str, str],
    store_inputs: bool,
    feature_names: tuple[str, ...],
    label_names: tuple[str, ...],
    ids_hex: bytes | None = None,
) -> LogBatch:
    """What the prediction log keeps of one answered request: the inputs only
    when the policy allows storing them, the trace only of rows a stage acted on
    (what the quiet stages were set to follows from the policy version).
    `ids_hex`: `ids` joined, as `feedback.models.new_prediction_id_block` gives
    them."""
    return LogBatch(
        ids=ids,
        created_at=datetime.now(UTC),
        model_version=versions[0],
        policy_version=versions[1],
        context=context,
        labels=batch.labels,
        abstained=batch.abstained,
        reasons=batch.reasons,
        probabilities=batch.probabilities,
        inputs=features if store_inputs else None,
        traces=_acted_traces(batch, store_inputs=store_inputs),
        feature_names=feature_names,
        label_names=label_names,
        ids_hex=ids_hex,
        label_codes=batch.label_codes,
        reason_codes=batch.reason_codes,
        reason_names=REASON_NAMES if batch.reason_codes is not None else (),
    )


def _acted_traces(batch: GuardedBatch, *, store_inputs: bool) -> list[Any] | None:
    acted = batch.acted_mask()
    if not acted.any():
        return None
    traces: list[Any] = batch.traces
    if not acted.all():
        traces = [t if a else None for t, a in zip(traces, acted.tolist(), strict=True)]
    if store_inputs:
        return traces
    # Rows that share a trace object keep sharing its cleaned copy (the log
    # writes a shared trace once).
    cleaned: dict[int, Any] = {}
    out: list[Any] = []
    for t in traces:
        if t is not None and id(t) not in cleaned:
            cleaned[id(t)] = without_input_values(t)
        out.append(None if t is None else cleaned[id(t)])
    return out


#: Trace keys whose value is an input measurement (the input-bounds stage names
#: the value it found out of bounds): kept out of the log under store_inputs false.
INPUT_VALUE_KEYS = frozenset({"value"})


def without_input_values(trace: Any) -> Any:
    """`trace` with every input measurement left out (its bounds and feature
    names stay: they say why a row abstained without saying what was measured)."""
    if isinstance(trace, dict):
        return {
            k: without_input_values(v)
            for k, v in trace.items()
            if k not in INPUT_VALUE_KEYS
        }
    if isinstance(trace, list):
        return [without_input_values(v) for v in trace]
    return trace
