"""Read the served probabilities of the latest answered rows of the prediction log:
what the label-free accuracy estimate judges.

Segments are read newest first (as `PredictionLogReader.latest` does) until no
older file can hold a row newer than the oldest kept. Segments without a
`probabilities` column, or whose labels are not the pack's, are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feedback.log_reader import PredictionLogReader
from feedback.log_segments import PROBABILITIES, label_names, list_segments

#: Writers' clocks and segment names may differ by this much (as in the reader).
_SKEW_MS = 2_000


def read_answered_probabilities(
    reader: PredictionLogReader,
    *,
    limit_rows: int,
    labels: Sequence[str],
    model_version: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, k) in `labels` order, answer index per row (n,)) of the
    latest `limit_rows` answered rows, oldest first."""
    names = list(labels)
    files = sorted(
        list_segments(reader.log_dir),
        key=lambda f: f.end_ms if f.end_ms is not None else 1 << 62,
        reverse=True,
    )
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    rows, oldest_kept = 0, None
    for f in files:
        if (
            rows >= limit_rows
            and oldest_kept is not None
            and f.end_ms is not None
            and f.end_ms + _SKEW_MS < oldest_kept
        ):
            break
        for table in reader._tables([f], None):  # the reader's own file access
            part = _answered(table, names, model_version)
            if part is not None and len(part[0]):
                parts.append(part)
                rows += len(part[0])
        if rows >= limit_rows:
            stamps = np.concatenate([p[2] for p in parts])
            oldest_kept = int(np.sort(stamps)[-limit_rows]) // 1000
    k = len(names)
    if not parts:
        return np.empty((0, k)), np.empty(0, dtype=np.intp)
    p = np.concatenate([x[0] for x in parts])
    answers = np.concatenate([x[1] for x in parts])
    stamps = np.concatenate([x[2] for x in parts])
    order = np.argsort(stamps, kind="stable")[-limit_rows:]
    return p[order], answers[order]


def _answered(
    table: pa.Table, names: list[str], model_version: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(probabilities, answer index, created_at in µs) of a segment's answered
    rows, or None when the segment has no usable probabilities."""
    own = label_names(table.schema)
    if PROBABILITIES not in table.column_names or sorted(own) != sorted(names):
        return None
    keep = pc.and_(pc.invert(table["abstained"]), pc.is_valid(table["label"]))
    keep = pc.and_(keep, pc.is_valid(table[PROBABILITIES]))
    if model_version is not None:
        keep = pc.and_(keep, pc.equal(table["model_version"], model_version))
    table = table.filter(pc.fill_null(keep, False))
    n = table.num_rows
    column = table[PROBABILITIES].combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    values = flat.reshape(n, len(own))[:, [own.index(x) for x in names]]
    index = {label: i for i, label in enumerate(names)}
    labels = table["label"].to_pylist()
    answers = np.array([index.get(x, -1) for x in labels], dtype=np.intp)
    stamps = pc.cast(table["created_at"], pa.int64()).to_numpy(zero_copy_only=False)
    ok = (answers >= 0) & np.isfinite(values).all(axis=1)
    return values[ok], answers[ok], stamps[ok]
