"""The column-at-a-time row reductions give numpy's own results, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from guardrails.rowwise import row_all, row_any, row_bits, row_count, row_max, row_sum


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7, 8, 13, 32, 33, 100])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_reduction_equals_numpys(k: int, dtype: type) -> None:
    rng = np.random.default_rng(k)
    a = rng.dirichlet(np.ones(k), 500).astype(dtype)
    a[3, 0] = np.nan  # NaN propagates as numpy's maximum does
    a[4] = np.inf
    b = a > 0.2
    np.testing.assert_array_equal(row_sum(a), a.sum(axis=1))
    np.testing.assert_array_equal(row_max(a), a.max(axis=1))
    np.testing.assert_array_equal(row_any(b), b.any(axis=1))
    np.testing.assert_array_equal(row_all(b), b.all(axis=1))
    np.testing.assert_array_equal(row_count(b), b.sum(axis=1))
    assert row_sum(a).dtype == a.sum(axis=1).dtype
    assert row_count(b).dtype == b.sum(axis=1).dtype


def test_views_and_empty_batches() -> None:
    a = np.arange(24, dtype=np.float64).reshape(6, 4)[:, 1:]  # not contiguous
    np.testing.assert_array_equal(row_sum(a), a.sum(axis=1))
    np.testing.assert_array_equal(row_max(a.T), a.T.max(axis=1))
    empty = np.empty((0, 3))
    assert row_sum(empty).shape == row_max(empty).shape == (0,)


@pytest.mark.parametrize("k", [1, 3, 16, 62])
def test_row_bits_number_each_row_by_its_columns(k: int) -> None:
    rng = np.random.default_rng(k)
    a = rng.random((300, k)) < 0.5
    expected = (a.astype(object) * [1 << j for j in range(k)]).sum(axis=1)
    assert row_bits(a).tolist() == expected.tolist()
    with pytest.raises(ValueError, match="63 columns"):
        row_bits(np.zeros((2, 63), bool))
