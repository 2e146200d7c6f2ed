"""Relation tests: how each numeric feature goes with the others.

A fault on one feature that keeps its marginal distribution plausible (a scale
off by 5%, a unit error on a feature with a wide spread) moves it by a small
fraction of its own spread, which a per-feature test on a reference of a few
hundred rows cannot see. Features rarely vary alone, though: a radius, a
perimeter and an area go together, so the same fault moves the feature far from
what the *other* features predict for it. For each feature the residual of a
linear regression on all the others is one more column tested like a feature.

All regressions come from one matrix: with standardised features `z` and `P` the
inverse of their (ridge-regularised) covariance, the least-squares residual of
`z_j` on the others is `(P z)_j / P_jj`. The reference's residuals are
cross-fitted (each fold's rows from a model fitted without them), so they are as
large as those of new rows and the tests keep their error rate; the window's come
from the model fitted on the whole reference.

Numpy only, like `monitoring.detector`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from monitoring.detector import Column

RELATION_PREFIX = "relation_"
#: Ridge added to the standardised covariance (a share of each feature's variance).
RIDGE = 1e-2
FOLDS = 5
#: Fewest complete reference rows per feature for the regressions to mean much.
MIN_ROWS_PER_FEATURE = 4


def relation_name(feature: str) -> str:
    return f"{RELATION_PREFIX}{feature}"


def relation_columns(
    current: np.ndarray,
    reference: np.ndarray,
    features: Sequence[str],
    *,
    seed: int = 0,
) -> list[Column]:
    """One residual column per non-constant feature (`relation_<feature>`), or
    none when fewer than two such features or too few reference rows. Rows with a
    missing value have a missing residual (left out by the test)."""
    cur = np.asarray(current, dtype="float64")
    ref = np.asarray(reference, dtype="float64")
    ref_complete = ref[~np.isnan(ref).any(axis=1)]
    spread = ref_complete.std(axis=0) if len(ref_complete) else np.zeros(ref.shape[1])
    kept = np.flatnonzero(spread > 0)
    if len(kept) < 2 or len(ref_complete) < MIN_ROWS_PER_FEATURE * len(kept) + FOLDS:
        return []
    ref_x = ref_complete[:, kept]
    model = _fit(ref_x)
    cur_residuals = _residuals(cur[:, kept], model)
    ref_residuals = np.empty_like(ref_x)
    fold = np.random.default_rng(seed).permutation(len(ref_x)) % FOLDS
    for k in range(FOLDS):
        held = fold == k
        ref_residuals[held] = _residuals(ref_x[held], _fit(ref_x[~held]))
    return [
        Column(
            relation_name(features[int(j)]),
            "relation",
            False,
            cur_residuals[:, i],
            ref_residuals[:, i],
        )
        for i, j in enumerate(kept)
    ]


def _fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    covariance = np.cov(z, rowvar=False) + RIDGE * np.eye(x.shape[1])
    precision = np.linalg.inv(covariance)
    return mean, scale, precision


def _residuals(
    x: np.ndarray, model: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    mean, scale, precision = model
    z = (x - mean) / scale
    # A missing value makes that row's residuals missing (NaN propagates).
    return (z @ precision) / np.diag(precision)
