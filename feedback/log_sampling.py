"""The numbers the review sampler decides each logged row by, computed for whole
columns: the row's sample unit (fixed by its prediction id) and its margin (top-1
minus top-2 probability).

The compactor stores both in every Parquet segment it writes (`REVIEW_UNIT`,
`MARGIN`: 8 bytes a row), where it has the rows decoded anyway, so the sampler
reads three narrow columns of a compacted segment instead of its ids and
probabilities; of a write-ahead segment, and of segments written before, they
are computed when read, the same way to the bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from feedback.log_segments import PROBABILITIES

#: Columns the compactor adds to a Parquet segment (not in write-ahead segments).
REVIEW_UNIT, MARGIN = "review_unit", "margin"

_GOLDEN = 0x9E3779B97F4A7C15


def _mix(z: np.ndarray) -> np.ndarray:
    # splitmix64's finaliser: every input bit reaches every output bit
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def review_units(ids: pa.Array | pa.ChunkedArray | Sequence[str]) -> np.ndarray:
    """Each id's 32-bit sample unit (uint32): the high half of a 64-bit mixing
    hash of the id's bytes. The same id gets the same unit in every process."""
    column = ids if isinstance(ids, pa.Array | pa.ChunkedArray) else pa.array(ids)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    column = column.cast(pa.large_string())
    n = len(column)
    units = np.zeros(n, dtype=np.uint32)
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
        units[rows] = (h >> np.uint64(32)).astype(np.uint32)
    return units


def units_of(review_unit: np.ndarray) -> np.ndarray:
    """32-bit sample units as numbers in [0, 1) (exact in float64)."""
    return np.asarray(review_unit, dtype=np.float64) / 2.0**32


def sample_units(ids: pa.Array | pa.ChunkedArray | Sequence[str]) -> np.ndarray:
    """A number in [0, 1) fixed by each id: the same rows are sampled every time,
    in every process."""
    return units_of(review_units(ids))


def table_margins(table: pa.Table) -> np.ndarray:
    """Top-1 minus top-2 probability of each row of a log table, rounded to
    float32 as stored (NaN where it has no probabilities)."""
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
    margins = (top2[:, 0] - top2[:, 1]).astype(np.float32).astype(np.float64)
    if column.null_count:
        margins[~column.is_valid().to_numpy(zero_copy_only=False)] = np.nan
    return margins


def with_review_columns(table: pa.Table) -> pa.Table:
    """`table` with its rows' sample units and margins (`REVIEW_UNIT`, `MARGIN`)."""
    units = pa.array(review_units(table["id"]), pa.uint32())
    margins = pa.array(table_margins(table).astype(np.float32), pa.float32())
    return table.append_column(REVIEW_UNIT, units).append_column(MARGIN, margins)


def decision_columns(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(sample units, margins) of a log table's rows: read from the compactor's
    columns where the table has them, computed otherwise."""
    names = table.column_names
    if REVIEW_UNIT in names and MARGIN in names:
        units = units_of(table[REVIEW_UNIT].to_numpy())
        margins = np.asarray(
            table[MARGIN].to_numpy(zero_copy_only=False), dtype=np.float64
        )
        return units, margins
    return sample_units(table["id"]), table_margins(table)
