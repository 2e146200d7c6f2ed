"""Prediction sets as label names: named once per distinct set, one list per row."""

from __future__ import annotations

import numpy as np
import pytest

from guardrails.pipeline import GuardedBatch


@pytest.mark.parametrize("k", [1, 3, 70])
@pytest.mark.parametrize("n", [0, 1, 500])
def test_each_row_gets_the_names_of_its_own_set_in_label_order(n: int, k: int) -> None:
    sets = np.random.default_rng(n + k).random((n, k)) < 0.4
    labels = [f"label-{j}" for j in range(k)]
    batch = GuardedBatch(
        np.zeros((n, k)), np.zeros((n, k)), [None] * n, np.zeros(n, bool), [None] * n,
        [], sets,
    )  # fmt: skip
    named = batch.prediction_set_lists(labels)
    assert named == [[labels[j] for j in np.flatnonzero(row)] for row in sets]
    assert named is not None and len({id(row) for row in named}) == n  # no sharing
