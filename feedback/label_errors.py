"""Probable label errors by confident learning (cleanlab's `find_label_issues`).

Candidates are training rows, confirmed reports and review answers, each with the
label people gave it and the model's probabilities for its input. cleanlab flags
the rows whose given label the probabilities make unlikely, ranked by
self-confidence (least confident first). Training rows are in the model's own
training data, so their probabilities are in-sample: flags there are the strongest
disagreements only.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

_CLEANLAB = "cleanlab.filter"
_loading = threading.Lock()
_loaded = threading.Event()


def finder_ready() -> bool:
    """True once cleanlab is imported in this process; else starts importing it in
    a background thread and returns False.

    Importing cleanlab (and scikit-learn with it) took over 30 s on a loaded
    machine, past the service's request timeout: a page shows the flags once the
    import is done instead of making its request wait for it. (`sys.modules`
    holds a module from the start of its import, so only the event says "done".)
    """
    if _loaded.is_set():
        return True
    if _loading.acquire(blocking=False):

        def load() -> None:
            try:
                importlib.import_module(_CLEANLAB)
                _loaded.set()
            finally:
                _loading.release()

        threading.Thread(target=load, name="cleanlab-import", daemon=True).start()
    return False


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
        labels=given,
        pred_probs=probs,
        return_indices_ranked_by="self_confidence",
        # In-process: no worker pool inside a service worker.
        n_jobs=1,
    )
    return [
        LabelIssue(
            candidate=usable[i],
            suggested=labels[int(probs[i].argmax())],
            given_probability=float(probs[i, given[i]]),
        )
        for i in list(ranked)[:limit]
    ]
