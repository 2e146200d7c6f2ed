"""The drift detector's rule: per-column tests, Bonferroni over all of them, one
drifted column is an alarm; both sides of each threshold, and its error rate."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.detector import (
    Column,
    DetectorConfig,
    chi_square_test,
    detect,
    ks_test,
    output_columns,
    probability_columns,
)


def numeric(name: str, current: np.ndarray, reference: np.ndarray) -> Column:
    return Column(name, "feature", False, current, reference)


def clean_columns(rng: np.random.Generator, count: int, rows: int) -> list[Column]:
    return [
        numeric(f"f{i}", rng.normal(size=rows), rng.normal(size=rows))
        for i in range(count)
    ]


@pytest.mark.parametrize("tests", [1, 4, 8])
def test_a_column_drifts_exactly_below_alpha_over_the_number_of_tests(
    tests: int,
) -> None:
    rng = np.random.default_rng(1)
    shifted = numeric("x", rng.normal(0.25, size=400), rng.normal(size=400))
    columns = [shifted, *clean_columns(rng, tests - 1, 50)]
    _, p_value = ks_test(shifted.current, shifted.reference)
    assert 1e-6 < p_value < 0.05
    # alpha / tests just above the p-value: drifted; just below: not.
    above = detect(columns, DetectorConfig(alpha=p_value * tests * 1.01))
    below = detect(columns, DetectorConfig(alpha=p_value * tests * 0.99))
    assert above.tests[0].drifted and above.drifted
    assert not below.tests[0].drifted
    assert above.per_test_alpha == pytest.approx(p_value * 1.01)
    assert above.tests[0].threshold == above.per_test_alpha


def test_one_broken_feature_among_many_clean_ones_is_an_alarm() -> None:
    rng = np.random.default_rng(2)
    columns = clean_columns(rng, 9, 1000)
    stuck = numeric("stuck", np.full(1000, 0.0), rng.normal(size=1000))
    verdict = detect([*columns, stuck], DetectorConfig(alpha=0.05))
    assert verdict.drifted
    assert [t.name for t in verdict.drifted_tests] == ["stuck"]
    assert verdict.drifted_tests[0].test == "ks"


def test_clean_columns_are_no_alarm_and_report_every_test() -> None:
    rng = np.random.default_rng(3)
    verdict = detect(clean_columns(rng, 5, 1000), DetectorConfig(alpha=0.05))
    assert not verdict.drifted and verdict.drifted_tests == []
    assert [t.name for t in verdict.tests] == [f"f{i}" for i in range(5)]
    assert all(0 <= t.p_value <= 1 and t.statistic >= 0 for t in verdict.tests)


def test_false_alarm_rate_with_no_shift_stays_within_alpha() -> None:
    rng = np.random.default_rng(4)
    alpha, windows = 0.1, 300
    alarms = sum(
        detect(clean_columns(rng, 6, 300), DetectorConfig(alpha=alpha)).drifted
        for _ in range(windows)
    )
    # Bonferroni bounds the rate by alpha (binomial sd at 300 windows ~ 0.017).
    assert alarms / windows <= alpha + 0.03
    # ...and the bound is not vacuous: the test does reject under the null.
    assert alarms > 0


def test_the_statistic_does_not_depend_on_the_reference_size() -> None:
    rng = np.random.default_rng(5)
    for ref_rows in (200, 5000):
        column = numeric("x", rng.normal(size=500), rng.normal(size=ref_rows))
        (outcome,) = detect([column], DetectorConfig(alpha=0.05)).tests
        assert outcome.test == "ks" and 0 <= outcome.p_value <= 1


def test_ks_leaves_missing_values_out_and_an_empty_side_is_no_evidence() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    with_nan = np.array([1.0, np.nan, 2.0, 3.0, 4.0, 5.0])
    assert ks_test(with_nan, values) == ks_test(values, values)
    statistic, p_value = ks_test(np.array([np.nan]), values)
    assert np.isnan(statistic) and p_value == 1.0


def test_chi_square_compares_two_samples_of_categories() -> None:
    same = ["a"] * 300 + ["b"] * 300
    _, p_same = chi_square_test(same, same)
    assert p_same == pytest.approx(1.0)
    tilted = ["a"] * 400 + ["b"] * 200
    statistic, p_tilted = chi_square_test(tilted, same)
    assert statistic > 10 and p_tilted < 1e-4
    # Missing labels (abstentions) are left out, not a category of their own.
    assert chi_square_test([*same, None, float("nan")], same)[1] == p_same
    # A single category on both sides says nothing.
    assert chi_square_test(["a"] * 10, ["a"] * 10) == (0.0, 1.0)


def test_categorical_columns_use_chi_square() -> None:
    column = Column("island", "feature", True, np.array(["x"] * 50 + ["y"] * 50),
                    np.array(["x"] * 90 + ["y"] * 10))  # fmt: skip
    (outcome,) = detect([column], DetectorConfig(alpha=0.05)).tests
    assert outcome.test == "chisquare" and outcome.drifted


def test_outputs_are_each_class_probability_and_the_predicted_label() -> None:
    proba = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    columns = output_columns(
        proba, proba, ["a", "b", "c"],
        current_labels=["c", "a"], reference_labels=["c", "a"],
    )  # fmt: skip
    assert [(c.name, c.kind, c.categorical) for c in columns] == [
        ("proba_a", "output", False),
        ("proba_b", "output", False),
        ("proba_c", "output", False),
        ("predicted_label", "output", True),
    ]
    assert list(columns[1].current) == [0.3, 0.3]


def test_two_classes_test_one_probability_not_its_complement() -> None:
    assert probability_columns(["no", "yes"]) == ["proba_no"]
    assert probability_columns(["a", "b", "c"]) == ["proba_a", "proba_b", "proba_c"]


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1])
def test_alpha_outside_zero_one_is_refused(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        DetectorConfig(alpha=alpha)
