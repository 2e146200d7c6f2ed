"""Measured accuracy from the audit sample: the review queue's uniform random share
of answered rows (`reason == "audit"`), as far as people have answered it.

Reports and abstentions are biased samples of the traffic; audit items are not,
so their answers measure the served accuracy with a Wilson score interval, to be
read next to the label-free estimates (`monitoring.accuracy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from feedback.errors import store_function
from feedback.models import ReviewItem

AUDIT_REASON = "audit"


@dataclass(frozen=True)
class AuditAccuracy:
    answered: int
    """Audit items a person answered (rows the model answered, not abstained)."""
    correct: int
    """...of which the person's label is the model's answer."""
    low: float
    high: float
    """Wilson score interval at `z` (NaN bounds with no answered item)."""

    @property
    def accuracy(self) -> float:
        return self.correct / self.answered if self.answered else math.nan


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (NaN, NaN for n = 0)."""
    if n == 0:
        return math.nan, math.nan
    p = correct / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@store_function
def audit_accuracy(
    session: Session, *, model_version: str | None = None, z: float = 1.96
) -> AuditAccuracy:
    """Accuracy of the answered audit items (of `model_version` when given)."""
    where = [
        ReviewItem.reason == AUDIT_REASON,
        ReviewItem.status == "answered",
        ReviewItem.label.is_not(None),
    ]
    if model_version is not None:
        where.append(ReviewItem.model_version == model_version)
    right = func.sum(case((ReviewItem.answer == ReviewItem.label, 1), else_=0))
    n, correct = session.execute(select(func.count(), right).where(*where)).one()
    n, correct = int(n or 0), int(correct or 0)
    low, high = wilson_interval(correct, n, z)
    return AuditAccuracy(n, correct, low, high)
