"""Online prior estimation over a sliding window of recent traffic.

`observe` only copies rows into a ring buffer (cheap, on the request path),
leaving out rows without finite probabilities and counting, by reason, every row
it did not take (also those of requests that named their own priors or context);
`refresh` runs EM and the likelihood-ratio test over the window (off the request
path: the service calls it periodically); `current` returns the last estimate.

Shrinkage. The EM estimate is moved towards "no shift" by the evidence for it:
only the share 1 − (k − 1)/statistic of the way from the null priors to it is
kept (`guardrails.em.shrinkage_weight`), so noise moves nothing and a clear
shift moves nearly all the way. An estimate is *used* only when the window holds
at least `min_window_rows`, the test rejects "no change" at `significance`
(1: no hard test, the shrinkage alone), and the shrunk shift is at least
`min_total_variation`, so that an unshifted stream keeps the training priors.
A hard test at 0.01 threw moderate shifts away whole: on wine at α = 1 EM was
within 0.04 of the true priors on windows it refused, where known priors gained
1.3 accuracy points.

Repeated rows. The test treats rows as independent draws, and each row's
posterior carries its own calibration error; a row sent again (a retry, a client
polling with the same input, an evaluation resampling a small pool) repeats that
error instead of adding evidence. A window of 1,000 rows drawn from 38 distinct
iris rows "detected" a shift in nearly every unshifted window. So `observe`
keeps a key per row (a fixed random projection of its inputs: equal inputs,
equal keys), and the test's statistic is scaled to the window's distinct rows.
EM itself still counts every row: the mix of the window is what it estimates.

Anchoring. EM assumes calibrated posteriors; with a miscalibrated model it
drifts away from the training priors even when nothing shifted, and with a big
window the test calls that drift significant (on a weak penguin model it doubled
log-loss on unshifted data). Given `reference_probabilities` (the model's output,
after temperature, on in-distribution rows such as the pack's reference set), the
estimator first runs EM there to learn where EM lands when nothing shifted (the
*null* priors), tests the window against that point instead, and reports the
relative change applied to the training priors: π_deploy ∝ π_train · π_EM / π_null.
For a calibrated model π_null ≈ π_train and this is plain EM.

Calibration. Anchoring corrects where EM lands, not how far it moves: on
under-confident models (iris and wine: a held-out log-loss optimum at T ≈ 0.2-0.6
whose validation parts are too small for the pack's own temperature fit) EM
overshot every shift and cost 1.5 accuracy points at α = 1 where known priors
gained 0.5. Given the pack's labelled validation rows (`calibration`), EM, the
test and the anchor see the rows sharpened by `em_temperature` fitted there
(see `guardrails.em`); the priors it estimates are applied to the answers'
probabilities as they are.

Thread-safe: one lock guards the buffer and the estimate; EM runs outside it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from guardrails.em import (
    chi2_p_value,
    em_priors,
    em_temperature,
    likelihood_ratio_statistic,
    sharpen,
    shrinkage_weight,
)
from guardrails.rowwise import row_all
from guardrails.temperature_scaling import resolve_temperature, scale

if TYPE_CHECKING:
    from guardrails.policy import Policy
    from packs.calibration_scores import CalibrationSet
    from packs.format import PackMetadata

#: Null priors are floored here before dividing by them (EM on a weak model can
#: drive a label's prior to ~0 on unshifted data).
NULL_PRIOR_FLOOR = 1e-3
#: Rows with an input that is not finite share this key.
_NOT_FINITE_KEY = -1.0


def row_keys(features: np.ndarray) -> np.ndarray:
    """(n,) one float per row, equal for equal rows and, for distinct rows of real
    data, distinct: a projection on fixed random weights, one matrix-vector
    product per batch (on the request path)."""
    flat = np.asarray(features).reshape(len(features), -1)
    with np.errstate(invalid="ignore", over="ignore"):
        keys = flat @ _projection(flat.shape[1])
    return np.where(np.isfinite(keys), keys, _NOT_FINITE_KEY)


@lru_cache(maxsize=8)
def _projection(width: int) -> np.ndarray:
    return np.random.default_rng(width).standard_normal(width)


@dataclass(frozen=True, eq=False)
class PriorEstimate:
    priors: np.ndarray
    """(k,) deployment priors in label order: the training priors until used."""
    window_rows: int
    """Rows the estimate was computed from."""
    used: bool
    """True only when the window was large enough and the shift significant."""
    p_value: float | None
    """Likelihood-ratio test p-value; None when EM did not run."""
    reason: str
    """Why it is or is not used, for people."""
    iterations: int = 0
    total_variation: float = 0.0
    """Total variation distance between the shrunk estimate and the null priors."""
    em_estimate: np.ndarray | None = None
    """(k,) the raw EM estimate, also when it is not used; None before EM ran."""
    rows_observed: int = 0
    """Rows taken into the window since the estimator started (across requests)."""
    left_out: dict[str, int] = field(default_factory=dict)
    """Rows not taken since the estimator started, by reason."""
    distinct_rows: int = 0
    """Distinct rows in the window (by their inputs): the test's sample size."""
    em_temperature: float = 1.0
    """The temperature EM's input got (fitted on the pack's validation rows)."""
    shrinkage: float = 0.0
    """Share of the way from the null priors to the EM estimate applied, 0-1."""

    def to_dict(self, labels: list[str]) -> dict[str, Any]:
        """JSON-friendly form for an endpoint or a log line."""
        return {
            "priors": {
                lab: float(v) for lab, v in zip(labels, self.priors, strict=True)
            },
            "window_rows": self.window_rows,
            "used": self.used,
            "p_value": self.p_value,
            "reason": self.reason,
            "iterations": self.iterations,
            "total_variation": self.total_variation,
            "em_estimate": None
            if self.em_estimate is None
            else {
                lab: float(v) for lab, v in zip(labels, self.em_estimate, strict=True)
            },
            "rows_observed": self.rows_observed,
            "left_out": dict(self.left_out),
            "distinct_rows": self.distinct_rows,
            "em_temperature": self.em_temperature,
            "shrinkage": self.shrinkage,
        }


class OnlinePriorEstimator:
    def __init__(
        self,
        train_priors: np.ndarray,
        window_rows: int,
        min_window_rows: int,
        significance: float,
        max_iter: int = 100,
        tol: float = 1e-6,
        *,
        min_total_variation: float = 0.0,
        reference_probabilities: np.ndarray | None = None,
        em_temperature: float = 1.0,
    ):
        self.train_priors = np.asarray(train_priors, dtype=float)
        self.window_rows = window_rows
        self.min_window_rows = min_window_rows
        self.significance = significance
        self.max_iter = max_iter
        self.tol = tol
        self.min_total_variation = min_total_variation
        self.em_temperature = em_temperature
        self.null_priors = self.train_priors.copy()
        if reference_probabilities is not None and len(reference_probabilities):
            reference = sharpen(reference_probabilities, em_temperature)
            null, _ = em_priors(reference, self.train_priors, 1000, tol)
            null = np.maximum(null, NULL_PRIOR_FLOOR)
            self.null_priors = null / null.sum()
        self._buffer = np.zeros((window_rows, len(self.train_priors)))
        self._keys = np.zeros(window_rows)
        self._serial = 0.5  # keys of rows observed without inputs: all distinct
        self._next = 0
        self._count = 0
        self._observed = 0
        self._left_out: dict[str, int] = {}
        self._lock = threading.Lock()
        self._estimate = PriorEstimate(
            self.train_priors.copy(),
            0,
            False,
            None,
            "no estimate yet",
            em_temperature=em_temperature,
        )

    @classmethod
    def from_policy(
        cls,
        policy: Policy,
        meta: PackMetadata,
        reference_model_probabilities: np.ndarray | None = None,
        calibration: CalibrationSet | None = None,
    ) -> OnlinePriorEstimator | None:
        """The estimator the policy asks for, or None when online priors are off.

        `reference_model_probabilities`: the model's raw output on the pack's
        reference rows; `calibration`: its labelled validation rows, for the
        temperature of EM's input. The policy's temperature is applied to both
        here, as the pipeline applies it before it observes traffic."""
        online = policy.priors.online
        if not online.enabled:
            return None
        t, _ = resolve_temperature(policy.temperature, meta.temperature)

        def as_observed(raw: np.ndarray) -> np.ndarray:
            raw = np.asarray(raw, dtype=float)
            return scale(raw / raw.sum(axis=1, keepdims=True), t)

        reference = None
        if reference_model_probabilities is not None:
            reference = as_observed(reference_model_probabilities)
        fitted = 1.0
        if calibration is not None and len(calibration.labels):
            fitted = em_temperature(
                as_observed(calibration.probabilities), calibration.labels
            )
        train = np.array([meta.training_priors[label] for label in meta.labels])
        return cls(
            train,
            online.window_rows,
            online.min_window_rows,
            online.significance,
            online.max_iter,
            online.tol,
            min_total_variation=online.min_total_variation,
            reference_probabilities=reference,
            em_temperature=fitted,
        )

    @property
    def rows_seen(self) -> int:
        """Rows in the window now (at most `window_rows`)."""
        return self._count

    def observe(
        self, probabilities: np.ndarray, keys: np.ndarray | None = None
    ) -> None:
        """Append rows (after temperature, before priors) to the window; rows
        without finite probabilities are left out and counted. `keys`: the rows'
        `row_keys` (without them every row counts as distinct)."""
        finite = row_all(np.isfinite(probabilities))
        if not finite.all():
            self.leave_out(int((~finite).sum()), "no finite probabilities")
            probabilities = probabilities[finite]
            keys = None if keys is None else keys[finite]
        with self._lock:
            self._observed += len(probabilities)
            if keys is None:
                keys = self._serial + np.arange(len(probabilities))
                self._serial += len(probabilities)
        rows = probabilities[-self.window_rows :]
        keys = keys[-self.window_rows :]
        m = len(rows)
        if m == 0:
            return
        with self._lock:
            end = self._next + m
            if end <= self.window_rows:
                self._buffer[self._next : end] = rows
                self._keys[self._next : end] = keys
            else:
                split = self.window_rows - self._next
                self._buffer[self._next :] = rows[:split]
                self._buffer[: m - split] = rows[split:]
                self._keys[self._next :] = keys[:split]
                self._keys[: m - split] = keys[split:]
            self._next = end % self.window_rows
            self._count = min(self._count + m, self.window_rows)

    def leave_out(self, rows: int, reason: str) -> None:
        """Count rows not taken into the window, and why."""
        if rows:
            with self._lock:
                self._left_out[reason] = self._left_out.get(reason, 0) + rows

    def window(self) -> np.ndarray:
        """A copy of the rows in the window (order not preserved)."""
        with self._lock:
            return self._buffer[: self._count].copy()

    def refresh(self) -> PriorEstimate:
        """Re-estimate from the window; returns and keeps the new estimate."""
        with self._lock:
            rows = self._buffer[: self._count].copy()
            keys = self._keys[: self._count].copy()
        estimate = self.estimate(rows, keys)
        with self._lock:
            estimate = replace(
                estimate, rows_observed=self._observed, left_out=dict(self._left_out)
            )
            self._estimate = estimate
        return estimate

    def estimate(
        self, rows: np.ndarray, keys: np.ndarray | None = None
    ) -> PriorEstimate:
        """The guarded estimate for `rows` (pure: does not touch the window);
        `keys`: their `row_keys` (without them every row counts as distinct)."""
        n = len(rows)
        distinct = n if keys is None else len(np.unique(keys))
        t = self.em_temperature
        if n < self.min_window_rows:
            reason = f"window has {n} rows, needs {self.min_window_rows}"
            return PriorEstimate(
                self.train_priors.copy(),
                n,
                False,
                None,
                reason,
                distinct_rows=distinct,
                em_temperature=t,
            )
        rows = sharpen(rows, t)
        em, iterations = em_priors(rows, self.train_priors, self.max_iter, self.tol)
        null = self.null_priors
        statistic = likelihood_ratio_statistic(
            rows, self.train_priors, em, null, effective_rows=distinct
        )
        p_value = chi2_p_value(statistic, len(em) - 1)
        weight = shrinkage_weight(statistic, len(em))
        shrunk = null + weight * (em - null)
        tv = 0.5 * float(np.abs(shrunk - null).sum())
        rows_note = f"; {distinct} distinct of {n} rows" if distinct < n else ""
        used = False
        if p_value >= self.significance:
            reason = f"no significant shift (p = {p_value:.3g} >= {self.significance}"
        elif tv < self.min_total_variation:
            reason = f"shift too small (TV {tv:.3g} < {self.min_total_variation}"
        else:
            used = True
            reason = f"shift detected (p = {p_value:.3g}, TV {tv:.3g}"
        priors = self.train_priors.copy()
        if used:
            deploy = self.train_priors * shrunk / null
            priors = deploy / deploy.sum()
        return PriorEstimate(
            priors,
            n,
            used,
            p_value,
            f"{reason}{rows_note})",
            iterations,
            tv,
            em,
            distinct_rows=distinct,
            em_temperature=t,
            shrinkage=weight,
        )

    def current(self) -> PriorEstimate:
        """The last refreshed estimate, with the row counts as of now."""
        with self._lock:
            last = self._estimate
            if (last.rows_observed, last.left_out) == (self._observed, self._left_out):
                return last
            return replace(
                last, rows_observed=self._observed, left_out=dict(self._left_out)
            )
