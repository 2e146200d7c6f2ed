"""Evidence that the conformal sets cover: empirical coverage and set size over
many random calibration/test splits of held-out model outputs.

For each dataset (`guardrails.heldout_data`), each split halves the held-out rows
into calibration and test rows at random, and measures on the test rows:

    no shift      plain split-conformal sets
    dirichlet     the test rows resampled to label priors drawn from
                  Dirichlet(0.1, ..., 0.1), probabilities adjusted to those priors
                  (floored at 1% as the policy does); sets weighted by
                  pi_deploy/pi_cal next to unweighted ones on the same scores
    island:<name> (penguins) the test rows of one island under its species counts

each also with randomised (smoothed p-value) sets, the policy's `randomize`,
beside the naive "most probable labels until their probability reaches 1 - alpha"
sets. Coverage is the share of test rows whose set holds the true label, averaged
over the splits; it is in band when within [1-alpha-0.02, 1-alpha+0.03]. The sets
come from `guardrails.conformal_sets.SetCalibrator`, the code the service runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from guardrails.conformal_sets import Score, SetCalibrator, naive_sets
from guardrails.heldout_data import HeldOut, label_shift_sample, load_heldout
from guardrails.priors import adjust, prepare_priors

ALPHAS = (0.1, 0.05)
SCORES_EVALUATED: tuple[Score, ...] = ("lac", "aps")
DIRICHLET_CONCENTRATION = 0.1
PRIOR_FLOOR = 0.01
#: Species counts per island, as the default policy's contexts give them.
ISLAND_COUNTS = {
    "Biscoe": {"Adelie": 44, "Gentoo": 124},
    "Dream": {"Adelie": 56, "Chinstrap": 68},
    "Torgersen": {"Adelie": 52},
}


def in_band(coverage: float, alpha: float) -> bool:
    return 1 - alpha - 0.02 <= coverage <= 1 - alpha + 0.03


@dataclass(frozen=True)
class CoverageRow:
    dataset: str
    shift: str
    alpha: float
    score: str
    method: str
    coverage: float
    set_size: float
    splits: int

    @property
    def in_band(self) -> bool:
        return in_band(self.coverage, self.alpha)


def _served_weights(priors: np.ndarray, train: np.ndarray) -> np.ndarray:
    served = prepare_priors(
        priors, floor=PRIOR_FLOOR, smoothing=0.0, allow_hard_zeros=False
    )
    return served / np.maximum(train, 1e-12)


def _measure(sets: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return float(sets[np.arange(len(y)), y].mean()), float(sets.sum(axis=1).mean())


def _shifts(
    data: HeldOut, test: np.ndarray, rng: np.random.Generator
) -> Iterable[tuple[str, np.ndarray, np.ndarray | None]]:
    """(shift name, test row indices, deploy/train weights or None)."""
    yield "none", test, None
    k = len(data.labels)
    drawn = rng.dirichlet(np.full(k, DIRICHLET_CONCENTRATION))
    rows = label_shift_sample(data.y[test], drawn, len(test), rng)
    yield "dirichlet(0.1)", test[rows], _served_weights(drawn, data.training_priors)
    if data.groups is not None:
        for island, counts in ISLAND_COUNTS.items():
            priors = np.array([counts.get(label, 0) for label in data.labels], float)
            mine = test[data.groups[test] == island]
            if len(mine):
                weights = _served_weights(priors, data.training_priors)
                yield f"island:{island}", mine, weights


RANDOMIZED = ", randomized"


def _methods(
    weights: np.ndarray | None, randomize: bool
) -> tuple[tuple[str, bool], ...]:
    """(method, reweight) pairs measured: plain sets without a shift; weighted and
    unweighted under one (randomised sets only weighted: the unweighted ones miss
    by far more than a quantile step)."""
    if weights is None:
        return (("conformal", True),)
    if randomize:
        return (("weighted", True),)
    return (("weighted", True), ("unweighted", False))


def evaluate_dataset(data: HeldOut, splits: int, seed: int) -> list[CoverageRow]:
    rng = np.random.default_rng(seed)
    n = len(data.y)
    sums: dict[tuple[str, float, str, str], list[tuple[float, float]]] = defaultdict(
        list
    )
    for _ in range(splits):
        order = rng.permutation(n)
        cal, test = order[: n // 2], order[n // 2 :]
        for shift, rows, weights in _shifts(data, test, rng):
            p, y = data.probabilities[rows], data.y[rows]
            if weights is not None:
                p, _ = adjust(p.copy(), weights)
            for alpha in ALPHAS:
                naive = _measure(naive_sets(p, alpha), y)
                sums[(shift, alpha, "-", "naive cumulative")].append(naive)
                for score in SCORES_EVALUATED:
                    for suffix, randomize in (("", False), (RANDOMIZED, True)):
                        calibrator = SetCalibrator(
                            data.probabilities[cal],
                            data.y[cal],
                            data.training_priors,
                            score=score,
                            alpha=alpha,
                            randomize=randomize,
                        )
                        for method, reweight in _methods(weights, randomize):
                            got = _measure(calibrator.sets(p, weights, reweight), y)
                            sums[(shift, alpha, score, method + suffix)].append(got)
    return [
        CoverageRow(
            data.name,
            shift,
            alpha,
            score,
            method,
            float(np.mean([c for c, _ in values])),
            float(np.mean([s for _, s in values])),
            len(values),
        )
        for (shift, alpha, score, method), values in sums.items()
    ]


def evaluate(
    datasets: Iterable[str], splits: int = 200, seed: int = 0
) -> list[CoverageRow]:
    if splits < 1:
        raise ValueError("splits must be at least 1")
    rows: list[CoverageRow] = []
    for i, name in enumerate(datasets):
        rows += evaluate_dataset(load_heldout(name, seed), splits, seed + i)
    return rows


def to_markdown(rows: list[CoverageRow]) -> str:
    lines = [
        "| dataset | shift | α | score | sets | coverage | in band | mean size |",
        "|---|---|---:|---|---|---:|:---:|---:|",
    ]
    for r in rows:
        band = "yes" if r.in_band else "**no**"
        if r.method == "naive cumulative":
            band = "yes" if r.in_band else "no"
        lines.append(
            f"| {r.dataset} | {r.shift} | {r.alpha} | {r.score} | {r.method} | "
            f"{r.coverage:.3f} | {band} | {r.set_size:.2f} |"
        )
    lines += ["", summary(rows)]
    return "\n".join(lines) + "\n"


def summary(rows: list[CoverageRow]) -> str:
    """One line per method: configurations inside the band out of all."""
    counts: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        counts[r.method].append(r.in_band)
    parts = [f"{m}: {sum(v)}/{len(v)} in band" for m, v in counts.items()]
    return "Configurations in band — " + "; ".join(parts) + "."
