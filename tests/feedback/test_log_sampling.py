"""What the review sampler decides by is the same whether it reads a compacted
segment (the compactor stored it) or an open one (computed when read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from feedback.log_reader import PredictionLogReader
from feedback.log_sampling import (
    MARGIN,
    REVIEW_UNIT,
    decision_columns,
    review_units,
    table_margins,
)
from feedback.log_segments import list_segments
from feedback.prediction_log import PredictionLog, WriterOptions
from tests.feedback.helpers import batch_of


def test_compacted_segments_hold_the_units_and_margins_an_open_one_gives(
    tmp_path: Path,
) -> None:
    log = PredictionLog(tmp_path, WriterOptions(fsync_interval_s=0)).start()
    for n in (1, 40, 700):
        batch = batch_of(n)
        batch.probabilities[:, 0] -= np.linspace(0, 0.5, n)  # margins of all sizes
        assert log.submit_batch(batch)
    assert log.flush(timeout_s=30)
    (wal,) = list_segments(tmp_path)
    open_table = PredictionLogReader(tmp_path)._read(wal, None)
    assert log.close(timeout_s=30)
    (segment,) = list_segments(tmp_path)
    assert not segment.is_wal
    stored = pq.read_table(segment.path)
    assert open_table is not None and REVIEW_UNIT not in open_table.column_names
    assert stored[REVIEW_UNIT].to_numpy().tolist() == (
        review_units(stored["id"]).tolist()
    )
    np.testing.assert_array_equal(
        stored[MARGIN].to_numpy(), table_margins(stored).astype(np.float32)
    )
    # The sampler's numbers agree to the bit, read either way.
    for from_open, from_stored in zip(
        decision_columns(open_table), decision_columns(stored), strict=True
    ):
        np.testing.assert_array_equal(from_open, from_stored)
