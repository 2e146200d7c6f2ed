"""The drift detector: one hypothesis test per column, one family-wise error rate.

A window is compared with the reference column by column: a two-sample
Kolmogorov-Smirnov test for each numeric input feature, for how each goes with
the others (`monitoring.relations`: the residual of a regression on the other
features) and for each class probability the model gives (black-box shift
detection: a change in inputs that matters to the model shows in its outputs),
and a chi-square test of homogeneity
for each categorical column, the predicted label included. The window counts as
drifted when any test's p-value is below `alpha / m` (Bonferroni over the `m`
tests), so with no shift the chance that a window raises an alarm is at most
`alpha` whatever the number of features, and one broken feature is enough to
raise one. The statistic never depends on the sizes of the samples.

Numpy and scipy only: no Evidently, no pandas, so the verdict is cheap to compute
and to test. Evidently's report is configured from the same `DetectorConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

NumericTest = Literal["ks"]
CategoricalTest = Literal["chisquare"]
ColumnKind = Literal["feature", "relation", "output"]

#: The output column holding the predicted label (window, reference, gauges).
PREDICTION_COLUMN = "predicted_label"

#: Evidently's names for the same tests, so its report uses what we decide with.
EVIDENTLY_METHOD = {"ks": "ks", "chisquare": "chisquare"}


@dataclass(frozen=True)
class DetectorConfig:
    """What the detector tests and at which family-wise error rate."""

    alpha: float
    """Family-wise false-alarm rate of one window (all tests together)."""
    numeric_test: NumericTest = "ks"
    categorical_test: CategoricalTest = "chisquare"

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def per_test_alpha(self, tests: int) -> float:
        """Bonferroni: each of `tests` tests runs at `alpha / tests`."""
        return self.alpha / max(tests, 1)


@dataclass(frozen=True)
class Column:
    """One column to test: its live values and its reference values."""

    name: str
    kind: ColumnKind
    categorical: bool
    current: np.ndarray
    reference: np.ndarray


@dataclass(frozen=True)
class ColumnTest:
    """One test's result: what was tested, how, and whether it drifted."""

    name: str
    kind: ColumnKind
    test: str
    statistic: float
    p_value: float
    threshold: float
    """The per-test p-value threshold (family-wise alpha / number of tests)."""
    drifted: bool


@dataclass(frozen=True)
class Verdict:
    alpha: float
    per_test_alpha: float
    tests: tuple[ColumnTest, ...]

    @property
    def drifted(self) -> bool:
        """True when at least one test rejected at the per-test level."""
        return any(t.drifted for t in self.tests)

    @property
    def drifted_tests(self) -> list[ColumnTest]:
        """The tests that rejected, smallest p-value first."""
        return sorted((t for t in self.tests if t.drifted), key=lambda t: t.p_value)


def ks_test(current: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Two-sample K-S statistic and p-value; missing values are left out, and an
    empty side is no evidence (statistic NaN, p-value 1)."""
    cur = np.asarray(current, dtype="float64")
    ref = np.asarray(reference, dtype="float64")
    cur, ref = cur[~np.isnan(cur)], ref[~np.isnan(ref)]
    if cur.size == 0 or ref.size == 0:
        return float("nan"), 1.0
    from scipy import stats  # not at import: the service's settings import this

    result = stats.ks_2samp(cur, ref)
    return float(result.statistic), float(result.pvalue)


def chi_square_test(
    current: Sequence[object] | np.ndarray, reference: Sequence[object] | np.ndarray
) -> tuple[float, float]:
    """Chi-square test of homogeneity of two samples of categories (a 2 x K
    contingency table; the reference is a sample too, not known proportions).
    Missing values are left out; fewer than two categories is no evidence."""
    cur = [str(v) for v in current if _present(v)]
    ref = [str(v) for v in reference if _present(v)]
    if not cur or not ref:
        return float("nan"), 1.0
    categories = sorted(set(cur) | set(ref))
    if len(categories) < 2:
        return 0.0, 1.0
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((2, len(categories)))
    for row, values in enumerate((cur, ref)):
        np.add.at(table[row], [index[v] for v in values], 1)
    from scipy import stats

    statistic, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    return float(statistic), float(p_value)


def detect(columns: Sequence[Column], config: DetectorConfig) -> Verdict:
    """Test every column and combine them at the family-wise `config.alpha`."""
    level = config.per_test_alpha(len(columns))
    outcomes = []
    for column in columns:
        if column.categorical:
            test: str = config.categorical_test
            statistic, p_value = chi_square_test(column.current, column.reference)
        else:
            test = config.numeric_test
            statistic, p_value = ks_test(column.current, column.reference)
        outcomes.append(
            ColumnTest(
                name=column.name,
                kind=column.kind,
                test=test,
                statistic=statistic,
                p_value=p_value,
                threshold=level,
                drifted=p_value < level,
            )
        )
    return Verdict(alpha=config.alpha, per_test_alpha=level, tests=tuple(outcomes))


def probability_columns(labels: Sequence[str]) -> list[str]:
    """Names of the class-probability columns that are tested. With two classes
    one probability is the complement of the other: testing both would spend
    half the error budget on a copy, so only the first is tested."""
    names = [f"proba_{label}" for label in labels]
    return names[:1] if len(names) == 2 else names


def output_columns(
    current_proba: np.ndarray,
    reference_proba: np.ndarray,
    labels: Sequence[str],
    *,
    current_labels: Sequence[object] | np.ndarray,
    reference_labels: Sequence[object] | np.ndarray,
) -> list[Column]:
    """Columns for the model's outputs: a probability per class (see
    `probability_columns`) and the predicted label."""
    tested = probability_columns(labels)
    columns = [
        Column(name, "output", False, current_proba[:, i], reference_proba[:, i])
        for i, name in enumerate(tested)
    ]
    columns.append(
        Column(
            PREDICTION_COLUMN,
            "output",
            True,
            np.asarray(current_labels, dtype=object),
            np.asarray(reference_labels, dtype=object),
        )
    )
    return columns


def _present(value: object) -> bool:
    if value is None:
        return False
    return not (isinstance(value, float) and np.isnan(value))
