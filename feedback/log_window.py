"""Read a window of the prediction log as columns: what the drift job compares."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from feedback.log_reader import PredictionLogReader, window_frame
from feedback.log_segments import feature_names as segment_features
from feedback.log_segments import list_segments


def read_prediction_window(
    reader: PredictionLogReader,
    *,
    limit_rows: int,
    model_version: str | None = None,
    feature_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The latest `limit_rows` logged predictions, oldest first, as a DataFrame.

    Columns: one per input feature (those of the newest segment holding inputs,
    or exactly `feature_names` in that order, NaN where missing), then
    `predicted_label` (None when abstained) and `created_at` (UTC). Rows logged
    without inputs have NaN features.
    """
    names = (
        list(feature_names) if feature_names is not None else _latest_features(reader)
    )
    table = reader.latest(limit_rows, feature_names=names, model_version=model_version)
    return window_frame(table, names)


def _latest_features(reader: PredictionLogReader) -> list[str]:
    import pyarrow.parquet as pq

    from feedback.log_wal import read_wal

    for f in reversed(list_segments(reader.log_dir)):
        try:
            schema = read_wal(f.path).schema if f.is_wal else pq.read_schema(f.path)  # type: ignore[union-attr]
        except (FileNotFoundError, AttributeError):
            continue
        names = segment_features(schema)
        if names:
            return names
    return []
