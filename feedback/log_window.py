"""Read a window of the prediction log as columns: what the drift job compares.

Core rows, not ORM objects, streamed in chunks that become numpy columns at once:
this feeds the drift job on windows of up to millions of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Float, String, cast, func, select, type_coerce
from sqlalchemy.orm import Session

from feedback.errors import store_function
from feedback.models import Prediction


@store_function
def read_prediction_window(
    session: Session,
    *,
    limit_rows: int,
    model_version: str | None = None,
    feature_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The latest `limit_rows` logged predictions, oldest first, as a DataFrame.

    Columns: one per input feature (all seen, or exactly `feature_names` in that
    order, NaN where missing), then `predicted_label` (None when abstained) and
    `created_at` (UTC). Rows logged without inputs have NaN features. Uses Core
    rows, not ORM objects: this feeds the drift job on 100k rows.
    """
    names = list(feature_names) if feature_names is not None else None
    if names is None:
        names = _latest_feature_names(session, model_version)
    # The database extracts the features from JSON (json_extract / ->>), and
    # timestamps come back as text (SQLite) or epoch seconds (PostgreSQL): both
    # are several times faster than building Python objects per row and cell.
    sqlite = session.get_bind().dialect.name == "sqlite"
    created = (
        type_coerce(Prediction.created_at, String())
        if sqlite
        else cast(func.extract("epoch", Prediction.created_at), Float)
    )
    stmt = select(
        *[Prediction.inputs[name].as_float() for name in names],
        Prediction.label,
        created,
    ).order_by(Prediction.created_at.desc())
    if model_version is not None:
        stmt = stmt.where(Prediction.model_version == model_version)
    # Core execution (no ORM result layer), streamed in chunks that become
    # columns at once: 1M rows never exist as Python rows all together (as rows,
    # they took ~600 MiB) and each chunk's row objects die young.
    stmt = stmt.limit(limit_rows).execution_options(yield_per=_WINDOW_CHUNK_ROWS)
    chunks = [
        _window_columns(part, len(names), sqlite=sqlite)
        for part in session.connection().execute(stmt).partitions()
    ]
    if not chunks:
        chunks = [_window_columns([], len(names), sqlite=sqlite)]
    data: dict[str, Any] = {
        name: np.concatenate([c[i] for c in chunks])[::-1]
        for i, name in enumerate(names)
    }
    data["predicted_label"] = np.concatenate([c[-2] for c in chunks])[::-1]
    stamps = np.concatenate([c[-1] for c in chunks])[::-1]
    # Parsed once, not per chunk: pandas' overhead per call would double the cost.
    data["created_at"] = (
        pd.to_datetime(stamps, utc=True, format="ISO8601")
        if sqlite
        else pd.to_datetime(np.round(stamps * 1e6).astype("int64"), unit="us", utc=True)
    )
    return pd.DataFrame(data)


#: Rows per fetched chunk of the drift window: small enough that its rows die
#: young (with 50,000, the garbage collector's older generations made a 1M-row read
#: of a process that had Evidently loaded twice as slow).
_WINDOW_CHUNK_ROWS = 1000


def _window_columns(rows: Sequence[Any], features: int, *, sqlite: bool) -> list[Any]:
    """One chunk of window rows as columns: float64 features (NaN where missing),
    labels (object, one shared string per distinct label) and timestamps (text
    on SQLite, epoch seconds on PostgreSQL)."""
    columns: list[Any] = list(zip(*rows, strict=True)) or [()] * (features + 2)
    out: list[Any] = [np.array(columns[i], dtype="float64") for i in range(features)]
    seen: dict[str | None, str | None] = {}
    labels = np.empty(len(rows), dtype=object)
    labels[:] = [seen.setdefault(label, label) for label in columns[-2]]
    out.append(labels)
    out.append(np.array(columns[-1], dtype=object if sqlite else "float64"))
    return out


def _latest_feature_names(session: Session, model_version: str | None) -> list[str]:
    stmt = select(Prediction.inputs).where(Prediction.inputs.is_not(None))
    if model_version is not None:
        stmt = stmt.where(Prediction.model_version == model_version)
    inputs = session.scalar(stmt.order_by(Prediction.created_at.desc()).limit(1))
    return list(inputs or {})
