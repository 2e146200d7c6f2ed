"""Split-conformal prediction sets, plain and weighted for label shift.

A conformity score s(x, y) says how badly label y fits row x (higher is worse):

    lac   1 - p(y|x)                         (least ambiguous sets)
    aps   Σ p(j|x) over labels j ranked at or above y   (adaptive prediction sets)
    raps  aps + λ · max(0, rank(y) - k_reg)  (regularised: penalises long sets)

Label y is in the set of row x when s(x, y) <= q_y. With n calibration rows and no
weights, q is the ⌈(n+1)(1-α)⌉-th smallest calibration score (infinite when that
exceeds n), which covers the true label with probability at least 1-α for rows
drawn like the calibration rows.

Under label shift (p(x|y) fixed, the label mix changed) calibration row i gets
weight w(y_i) = π_deploy(y_i)/π_cal(y_i) and a candidate y the weight w(y); q_y is
the (1-α) quantile of Σ_i w(y_i)·δ(s_i) + w(y)·δ(+∞), normalised (Podkopaev &
Ramdas 2021, "Distribution-free uncertainty quantification for classification
under label shift"), so coverage holds for the deployment's label mix. With equal
weights this is exactly the unweighted quantile.

The aps score is the non-randomised one.

Those sets cover *at least* 1-α, and by up to one quantile step more: with
weights concentrated on a few calibration rows (a small calibration set under a
strong shift) the step is wide and the sets over-cover. `randomize` gives the
smoothed p-value instead (Vovk et al. 2005; Tibshirani et al. 2019 for weights):
label y is in the set when

    Σ_{s_i > s} w_i + U · (Σ_{s_i = s} w_i + w(y))  >  α · (Σ_i w_i + w(y))

with U uniform on [0, 1), which covers exactly 1-α on average. U is a fixed
function of the row's probabilities (`row_uniforms`), so the same row still
always gets the same set.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Literal

import numpy as np

from guardrails.priors import adjust

Score = Literal["lac", "aps", "raps"]
SCORES: tuple[Score, ...] = ("lac", "aps", "raps")


def label_scores(
    probabilities: np.ndarray,
    score: Score,
    *,
    raps_lambda: float = 0.0,
    raps_k_reg: int = 0,
) -> np.ndarray:
    """(n, k) conformity score of every candidate label of every row."""
    if score == "lac":
        return 1.0 - probabilities
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; scores: {SCORES}")
    order = np.argsort(-probabilities, axis=1, kind="stable")
    ranked = np.take_along_axis(probabilities, order, axis=1)
    cumulative = np.cumsum(ranked, axis=1)
    if score == "raps":
        rank = np.arange(1, probabilities.shape[1] + 1)
        cumulative = cumulative + raps_lambda * np.maximum(0, rank - raps_k_reg)
    out = np.empty_like(cumulative)
    np.put_along_axis(out, order, cumulative, axis=1)
    return out


def true_label_scores(all_scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n,) score of each calibration row's true label."""
    return all_scores[np.arange(len(y)), y]


def thresholds(
    calibration_scores: np.ndarray,
    calibration_weights: np.ndarray | None,
    candidate_weights: np.ndarray,
    alpha: float,
) -> np.ndarray:
    """q_y per candidate label (k,): the weighted (1-α) quantile of the calibration
    scores with the candidate's own weight at +∞ (see the module docstring).

    `calibration_weights` None means every calibration row weighs 1."""
    n = len(calibration_scores)
    order = np.argsort(calibration_scores, kind="stable")
    ranked = calibration_scores[order]
    if calibration_weights is None:
        cumulative = np.arange(1, n + 1, dtype=np.float64)
    else:
        cumulative = np.cumsum(calibration_weights[order])
    total = (cumulative[-1] if n else 0.0) + candidate_weights
    # The same float expression as the textbook ⌈(n+1)(1-α)⌉ with unit weights.
    needed = total * (1 - alpha)
    if calibration_weights is None:
        needed = np.ceil(needed)
    index = np.searchsorted(cumulative, needed, side="left")
    out = np.full(len(candidate_weights), np.inf)
    found = index < n
    out[found] = ranked[index[found]]
    return out


def unweighted_threshold(calibration_scores: np.ndarray, alpha: float) -> float:
    """The plain split-conformal quantile (one for every label)."""
    return float(thresholds(calibration_scores, None, np.ones(1), alpha)[0])


def prediction_sets(all_scores: np.ndarray, label_thresholds: np.ndarray) -> np.ndarray:
    """(n, k) bool: label j is in row i's set when its score is at most q_j."""
    return all_scores <= label_thresholds[None, :]


def shift_weights(
    deploy_over_train: np.ndarray | None,
    training_priors: np.ndarray,
    calibration_priors: np.ndarray,
) -> np.ndarray | None:
    """w(y) = π_deploy(y)/π_cal(y) from the priors stage's π_deploy/π_train.

    None (no deployment prior) stays None: the unweighted quantile. A label absent
    from the calibration set gets an infinite weight, so it is always in the set
    (nothing is known about its scores)."""
    if deploy_over_train is None:
        return None
    deploy = deploy_over_train * training_priors
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(calibration_priors > 0, deploy / calibration_priors, np.inf)
    return np.where(deploy > 0, w, 0.0)


def naive_sets(probabilities: np.ndarray, alpha: float) -> np.ndarray:
    """(n, k) bool: the most probable labels until their total reaches 1-α (the
    uncalibrated "cumulative probability" sets conformal sets are compared with)."""
    order = np.argsort(-probabilities, axis=1, kind="stable")
    cumulative = np.cumsum(np.take_along_axis(probabilities, order, axis=1), axis=1)
    before = cumulative - np.take_along_axis(probabilities, order, axis=1)
    ranked_in = before < 1 - alpha
    out = np.zeros_like(ranked_in)
    np.put_along_axis(out, order, ranked_in, axis=1)
    return out


def row_uniforms(probabilities: np.ndarray) -> np.ndarray:
    """(n,) numbers in [0, 1), uniform across rows and a fixed function of each
    row's probabilities: the fractional part of Σ_j p_j c_j with large, unrelated
    weights c_j (2^20 to 2^21). A change of 1e-6 in one probability sweeps it
    across [0, 1), a change the score does not notice, so it says nothing about
    the score."""
    return np.modf(probabilities @ _row_weights(probabilities.shape[1]))[0]


@lru_cache(maxsize=64)
def _row_weights(k: int) -> np.ndarray:
    golden = 0.6180339887498949
    return (1.0 + (np.arange(1, k + 1) * golden) % 1.0) * 2.0**20


@dataclass(frozen=True)
class WeightedScores:
    """The calibration scores under one deployment prior, sorted, with weights."""

    ranked: np.ndarray
    cumulative: np.ndarray
    """Σ of the weights of the first i ranked rows, i = 0..n (n + 1 entries)."""
    candidate_weights: np.ndarray

    @cached_property
    def _candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """(finite candidate weights, labels always in: an infinite weight, a
        label never calibrated)."""
        always = np.isinf(self.candidate_weights)
        return np.where(always, 0.0, self.candidate_weights), always

    def randomized_sets(
        self, all_scores: np.ndarray, u: np.ndarray, alpha: float
    ) -> np.ndarray:
        """(n, k) bool: the smoothed-p-value sets (module docstring)."""
        w, always = self._candidates
        total = self.cumulative[-1]
        ranked = self.ranked
        at = np.searchsorted(ranked, all_scores, "left")
        below = self.cumulative[at]
        # Ties with calibration scores are rare (continuous scores): the weight
        # at exactly the row's score is looked up only where there is one.
        tied = np.zeros_like(below)
        if len(ranked):
            hit = ranked[np.minimum(at, len(ranked) - 1)] == all_scores
            if hit.any():
                right = np.searchsorted(ranked, all_scores[hit], "right")
                tied[hit] = self.cumulative[right] - below[hit]
        tail = total - below - tied
        inside = tail + u[:, None] * (tied + w) > alpha * (total + w)
        return inside | always


class SetCalibrator:
    """Thresholds from one calibration set, cached per deployment prior.

    The score of a row under a deployment prior is computed from its prior-adjusted
    probabilities, so calibration rows are adjusted the same way before scoring:
    the score function is the one the served rows go through."""

    def __init__(
        self,
        probabilities: np.ndarray,
        y: np.ndarray,
        training_priors: np.ndarray,
        *,
        score: Score,
        alpha: float,
        raps_lambda: float = 0.0,
        raps_k_reg: int = 0,
        randomize: bool = False,
        cache_size: int = 64,
    ):
        self.probabilities = probabilities
        self.y = y
        self.training_priors = training_priors
        k = probabilities.shape[1]
        self.calibration_priors = np.bincount(y, minlength=k) / max(len(y), 1)
        self.score: Score = score
        self.alpha = alpha
        self._raps_lambda = raps_lambda
        self._raps_k_reg = raps_k_reg
        self.randomize = randomize
        self._cache: OrderedDict[
            tuple[bytes | None, bool], tuple[np.ndarray, WeightedScores]
        ] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def scores(self, probabilities: np.ndarray) -> np.ndarray:
        """(n, k) scores of rows under this calibrator's score."""
        return label_scores(
            probabilities,
            self.score,
            raps_lambda=self._raps_lambda,
            raps_k_reg=self._raps_k_reg,
        )

    def thresholds(
        self, deploy_over_train: np.ndarray | None, reweight: bool = True
    ) -> np.ndarray:
        """(k,) q_y for rows adjusted by `deploy_over_train` (None: training
        priors); `reweight` False keeps unit weights (plain split conformal)."""
        return self._calibrated(deploy_over_train, reweight)[0]

    def _calibrated(
        self, deploy_over_train: np.ndarray | None, reweight: bool
    ) -> tuple[np.ndarray, WeightedScores]:
        key = (
            None if deploy_over_train is None else deploy_over_train.tobytes(),
            reweight,
        )
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        probabilities = self.probabilities
        if deploy_over_train is not None:
            probabilities, _ = adjust(probabilities.copy(), deploy_over_train)
        calibration = true_label_scores(self.scores(probabilities), self.y)
        k = self.probabilities.shape[1]
        w = shift_weights(
            deploy_over_train if reweight else None,
            self.training_priors,
            self.calibration_priors,
        )
        order = np.argsort(calibration, kind="stable")
        if w is None:
            q = thresholds(calibration, None, np.ones(k), self.alpha)
            row_weights, candidate = np.ones(len(calibration)), np.ones(k)
        else:
            q = thresholds(calibration, w[self.y], w, self.alpha)
            row_weights, candidate = w[self.y], w
        distribution = WeightedScores(
            calibration[order],
            np.concatenate([[0.0], np.cumsum(row_weights[order])]),
            candidate,
        )
        out = (q, distribution)
        with self._lock:
            self._cache[key] = out
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def sets(
        self,
        probabilities: np.ndarray,
        deploy_over_train: np.ndarray | None = None,
        reweight: bool = True,
    ) -> np.ndarray:
        """(n, k) bool prediction sets of rows already adjusted to the prior."""
        q, distribution = self._calibrated(deploy_over_train, reweight)
        scores = self.scores(probabilities)
        if self.randomize:
            u = row_uniforms(probabilities)
            return distribution.randomized_sets(scores, u, self.alpha)
        return prediction_sets(scores, q)
