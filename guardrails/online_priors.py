"""Online prior estimation over a sliding window of recent traffic.

`observe` only copies rows into a ring buffer (cheap, on the request path),
leaving out rows without finite probabilities and counting, by reason, every row
it did not take (also those of requests that named their own priors or context);
`refresh` runs EM and the likelihood-ratio test over the window (off the request
path: the service calls it periodically); `current` returns the last estimate.
An estimate is *used* only when the window holds at least `min_window_rows`, the
test rejects "no change" at `significance`, and the shift is at least
`min_total_variation`, so that an unshifted stream keeps the training priors.

Anchoring. EM assumes calibrated posteriors; with a miscalibrated model it
drifts away from the training priors even when nothing shifted, and with a big
window the test calls that drift significant (on a weak penguin model it doubled
log-loss on unshifted data). Given `reference_probabilities` (the model's output,
after temperature, on in-distribution rows such as the pack's reference set), the
estimator first runs EM there to learn where EM lands when nothing shifted (the
*null* priors), tests the window against that point instead, and reports the
relative change applied to the training priors: π_deploy ∝ π_train · π_EM / π_null.
For a calibrated model π_null ≈ π_train and this is plain EM.

Thread-safe: one lock guards the buffer and the estimate; EM runs outside it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from guardrails.em import em_priors, likelihood_ratio_test
from guardrails.temperature_scaling import resolve_temperature, scale

if TYPE_CHECKING:
    from guardrails.policy import Policy
    from packs.format import PackMetadata

#: Null priors are floored here before dividing by them (EM on a weak model can
#: drive a label's prior to ~0 on unshifted data).
NULL_PRIOR_FLOOR = 1e-3


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
    """Total variation distance between the EM estimate and the null priors."""
    em_estimate: np.ndarray | None = None
    """(k,) the raw EM estimate, also when it is not used; None before EM ran."""
    rows_observed: int = 0
    """Rows taken into the window since the estimator started (across requests)."""
    left_out: dict[str, int] = field(default_factory=dict)
    """Rows not taken since the estimator started, by reason."""

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
    ):
        self.train_priors = np.asarray(train_priors, dtype=float)
        self.window_rows = window_rows
        self.min_window_rows = min_window_rows
        self.significance = significance
        self.max_iter = max_iter
        self.tol = tol
        self.min_total_variation = min_total_variation
        self.null_priors = self.train_priors.copy()
        if reference_probabilities is not None and len(reference_probabilities):
            null, _ = em_priors(reference_probabilities, self.train_priors, 1000, tol)
            null = np.maximum(null, NULL_PRIOR_FLOOR)
            self.null_priors = null / null.sum()
        self._buffer = np.zeros((window_rows, len(self.train_priors)))
        self._next = 0
        self._count = 0
        self._observed = 0
        self._left_out: dict[str, int] = {}
        self._lock = threading.Lock()
        self._estimate = PriorEstimate(
            self.train_priors.copy(), 0, False, None, "no estimate yet"
        )

    @classmethod
    def from_policy(
        cls,
        policy: Policy,
        meta: PackMetadata,
        reference_model_probabilities: np.ndarray | None = None,
    ) -> OnlinePriorEstimator | None:
        """The estimator the policy asks for, or None when online priors are off.

        `reference_model_probabilities`: the model's raw output on the pack's
        reference rows; the policy's temperature is applied here, as the pipeline
        applies it before it observes traffic."""
        online = policy.priors.online
        if not online.enabled:
            return None
        reference = None
        if reference_model_probabilities is not None:
            t, _ = resolve_temperature(policy.temperature, meta.temperature)
            raw = np.asarray(reference_model_probabilities, dtype=float)
            reference = scale(raw / raw.sum(axis=1, keepdims=True), t)
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
        )

    @property
    def rows_seen(self) -> int:
        """Rows in the window now (at most `window_rows`)."""
        return self._count

    def observe(self, probabilities: np.ndarray) -> None:
        """Append rows (after temperature, before priors) to the window; rows
        without finite probabilities are left out and counted."""
        finite = np.isfinite(probabilities).all(axis=1)
        if not finite.all():
            self.leave_out(int((~finite).sum()), "no finite probabilities")
            probabilities = probabilities[finite]
        with self._lock:
            self._observed += len(probabilities)
        rows = probabilities[-self.window_rows :]
        m = len(rows)
        if m == 0:
            return
        with self._lock:
            end = self._next + m
            if end <= self.window_rows:
                self._buffer[self._next : end] = rows
            else:
                split = self.window_rows - self._next
                self._buffer[self._next :] = rows[:split]
                self._buffer[: m - split] = rows[split:]
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
        estimate = self.estimate(self.window())
        with self._lock:
            estimate = replace(
                estimate, rows_observed=self._observed, left_out=dict(self._left_out)
            )
            self._estimate = estimate
        return estimate

    def estimate(self, rows: np.ndarray) -> PriorEstimate:
        """The guarded estimate for `rows` (pure: does not touch the window)."""
        n = len(rows)
        if n < self.min_window_rows:
            reason = f"window has {n} rows, needs {self.min_window_rows}"
            return PriorEstimate(self.train_priors.copy(), n, False, None, reason)
        em, iterations = em_priors(rows, self.train_priors, self.max_iter, self.tol)
        p_value = likelihood_ratio_test(rows, self.train_priors, em, self.null_priors)
        tv = 0.5 * float(np.abs(em - self.null_priors).sum())
        if p_value >= self.significance:
            reason = f"no significant shift (p = {p_value:.3g} >= {self.significance})"
        elif tv < self.min_total_variation:
            reason = f"shift too small (TV {tv:.3g} < {self.min_total_variation})"
        else:
            deploy = self.train_priors * em / self.null_priors
            reason = f"shift detected (p = {p_value:.3g}, TV {tv:.3g})"
            return PriorEstimate(
                deploy / deploy.sum(), n, True, p_value, reason, iterations, tv, em
            )
        return PriorEstimate(
            self.train_priors.copy(), n, False, p_value, reason, iterations, tv, em
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
