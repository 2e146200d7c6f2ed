"""The column answer's prediction sets, written once per distinct set, are the
same JSON as the per-row lists."""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails.pipeline import GuardedBatch
from service.encoding import prediction_sets_json


def _batch(sets: np.ndarray | None, n: int, k: int) -> GuardedBatch:
    return GuardedBatch(
        probabilities=np.full((n, k), 1 / k),
        model_probabilities=np.full((n, k), 1 / k),
        labels=[None] * n,
        abstained=np.zeros(n, bool),
        reasons=[None] * n,
        trace_columns=[],
        prediction_sets=sets,
    )


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300),
    k=st.integers(1, 20),
    density=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_each_row_reads_back_as_its_own_set(
    n: int, k: int, density: float, seed: int
) -> None:
    sets = np.random.default_rng(seed).random((n, k)) < density
    labels = [f'label {j} "quoted"' for j in range(k)]
    batch = _batch(sets, n, k)
    fragment = prediction_sets_json(batch, labels)
    assert fragment is not None
    read = orjson.loads(orjson.dumps({"prediction_set": fragment}))
    assert read["prediction_set"] == batch.prediction_set_lists(labels)
    assert len(read["prediction_set"]) == n


def test_no_sets_is_null() -> None:
    assert prediction_sets_json(_batch(None, 3, 2), ["a", "b"]) is None
