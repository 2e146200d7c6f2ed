"""Relation tests: a fault on one feature that its own test cannot see on a small
reference shows in how it goes with the other features; with no fault the tests
keep their error rate (the reference's residuals are cross-fitted)."""

from __future__ import annotations

import numpy as np

from monitoring.detector import Column, DetectorConfig, detect
from monitoring.relations import relation_columns

FEATURES = ["radius", "perimeter", "area", "texture"]


def sample(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Three features that go together (like a radius, a perimeter and an area)
    and one that varies alone; all positive, with a wide spread (CV above 1)."""
    size = rng.lognormal(0.0, 1.0, rows)
    radius = 10 * size * rng.normal(1, 0.02, rows)
    perimeter = 63 * size * rng.normal(1, 0.02, rows)
    area = 300 * size**2 * rng.normal(1, 0.04, rows)
    texture = rng.normal(20, 4, rows)
    return np.column_stack([radius, perimeter, area, texture])


def features_only(x: np.ndarray, ref: np.ndarray) -> list[Column]:
    return [
        Column(name, "feature", False, x[:, j], ref[:, j])
        for j, name in enumerate(FEATURES)
    ]


def alarms(x: np.ndarray, ref: np.ndarray, *, relations: bool) -> bool:
    columns = features_only(x, ref)
    if relations:
        columns += relation_columns(x, ref, FEATURES)
    return detect(columns, DetectorConfig(alpha=0.05)).drifted


def test_a_five_percent_scale_on_a_correlated_feature_is_caught_by_its_relation():
    rng = np.random.default_rng(1)
    ref = sample(rng, 400)
    caught = {False: 0, True: 0}
    for _ in range(20):
        window = sample(rng, 1000)
        window[:, 1] *= 1.05  # perimeter in the wrong unit, by 5%
        for relations in caught:
            caught[relations] += alarms(window, ref, relations=relations)
    assert caught[False] <= 12  # its own K-S test misses about half the windows
    assert caught[True] == 20


def test_with_no_fault_the_relation_tests_keep_the_false_alarm_rate():
    rng = np.random.default_rng(2)
    ref = sample(rng, 400)
    false_alarms = sum(
        alarms(sample(rng, 1000), ref, relations=True) for _ in range(100)
    )
    assert false_alarms <= 10  # alpha = 0.05 family-wise; 10/100 is far above


def test_residuals_fitted_on_the_reference_itself_would_raise_false_alarms():
    # Why the reference's residuals are cross-fitted: in-sample residuals are
    # smaller than those of new rows. Pinned so that the folds cannot be dropped.
    from monitoring.relations import _fit, _residuals

    rng = np.random.default_rng(3)
    ref = sample(rng, 60)
    in_sample = _residuals(ref, _fit(ref))
    (col, *_) = relation_columns(ref, ref, FEATURES)
    assert np.std(in_sample[:, 0]) < np.std(col.reference)


def test_constant_features_and_small_references_get_no_relation_test():
    rng = np.random.default_rng(4)
    ref = sample(rng, 400)
    ref[:, 3] = 7.0
    names = [c.name for c in relation_columns(sample(rng, 500), ref, FEATURES)]
    assert names == ["relation_radius", "relation_perimeter", "relation_area"]
    assert relation_columns(sample(rng, 500), ref[:10], FEATURES) == []
    assert relation_columns(sample(rng, 500)[:, :1], ref[:, :1], FEATURES[:1]) == []


def test_a_row_missing_a_value_has_no_residual():
    rng = np.random.default_rng(5)
    window = sample(rng, 300)
    window[0, 2] = np.nan
    columns = relation_columns(window, sample(rng, 400), FEATURES)
    assert all(np.isnan(c.current[0]) for c in columns)
    assert not np.isnan(columns[0].current[1:]).any()


def test_relation_columns_say_what_they_are() -> None:
    rng = np.random.default_rng(6)
    columns = relation_columns(sample(rng, 300), sample(rng, 400), FEATURES)
    assert {c.kind for c in columns} == {"relation"}
    assert not any(c.categorical for c in columns)
