"""Probable label errors by confident learning (cleanlab's `find_label_issues`).

Candidates are training rows, confirmed reports and review answers, each with the
label people gave it and the model's probabilities for its input. cleanlab flags
the rows whose given label the probabilities make unlikely, ranked by
self-confidence (least confident first). Training rows are in the model's own
training data, so their probabilities are in-sample: flags there are the strongest
disagreements only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Candidate:
    source: str
    """`training`, `report` or `review`."""
    ref: str
    """Row number (training), report id or review item id."""
    label: str
    features: Sequence[float]


@dataclass(frozen=True)
class LabelIssue:
    candidate: Candidate
    suggested: str
    """The model's most likely label."""
    given_probability: float
    """The model's probability of the given label."""


def find_label_errors(
    candidates: Sequence[Candidate],
    *,
    labels: Sequence[str],
    predict_proba: Callable[[np.ndarray], np.ndarray],
    limit: int = 50,
) -> list[LabelIssue]:
    """The candidates cleanlab flags, least self-confident first (at most `limit`)."""
    index = {label: i for i, label in enumerate(labels)}
    usable = [c for c in candidates if c.label in index]
    given = np.array([index[c.label] for c in usable], dtype=int)
    # Confident learning needs every class among the given labels.
    if len(usable) < 2 * len(labels) or len(set(given.tolist())) < len(labels):
        return []
    from cleanlab.filter import find_label_issues

    probs = predict_proba(np.array([list(c.features) for c in usable]))
    ranked = find_label_issues(
        labels=given, pred_probs=probs, return_indices_ranked_by="self_confidence"
    )
    return [
        LabelIssue(
            candidate=usable[i],
            suggested=labels[int(probs[i].argmax())],
            given_probability=float(probs[i, given[i]]),
        )
        for i in list(ranked)[:limit]
    ]
