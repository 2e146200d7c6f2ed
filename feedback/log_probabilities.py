"""Read the served probabilities of the latest answered rows of the prediction log:
what the label-free accuracy estimate judges."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from feedback.errors import store_function
from feedback.models import Prediction


@store_function
def read_answered_probabilities(
    session: Session,
    *,
    limit_rows: int,
    labels: Sequence[str],
    model_version: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, k) in `labels` order, answer index per row (n,)) of the
    latest `limit_rows` answered rows; rows logged without probabilities, or with
    a label outside `labels`, are left out."""
    names = list(labels)
    stmt = select(
        *[Prediction.outputs["probabilities"][name].as_float() for name in names],
        Prediction.label,
    ).where(Prediction.abstained.is_(False), Prediction.label.is_not(None))
    if model_version is not None:
        stmt = stmt.where(Prediction.model_version == model_version)
    stmt = stmt.order_by(Prediction.created_at.desc()).limit(limit_rows)
    rows = session.connection().execute(stmt).all()
    index = {name: i for i, name in enumerate(names)}
    k = len(names)
    if not rows:
        return np.empty((0, k)), np.empty(0, dtype=np.intp)
    table = np.array([r[:k] for r in rows], dtype=np.float64)
    answers = np.array([index.get(r[k], -1) for r in rows], dtype=np.intp)
    keep = np.isfinite(table).all(axis=1) & (answers >= 0)
    return table[keep][::-1], answers[keep][::-1]
