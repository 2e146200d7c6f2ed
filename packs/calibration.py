"""Calibration math shared by pack building and evaluation: temperature, log-loss, ECE.

Temperature scaling on probabilities: p_T ∝ p^(1/T). A temperature fitted on a small,
nearly error-free validation set collapses towards 0 and ruins log-loss on new data,
so the fit is bounded and refused (T = 1 kept) below a minimum validation size.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from packs.format import TemperatureFit

_EPS = 1e-12


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale (n, k) probabilities with temperature T; rows stay distributions."""
    logp = np.log(np.clip(probs, _EPS, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of integer labels `y`."""
    picked = probs[np.arange(len(y)), y]
    return float(-np.mean(np.log(np.clip(picked, _EPS, 1.0))))


def expected_calibration_error(
    probs: np.ndarray, y: np.ndarray, bins: int = 10
) -> float:
    """ECE of the top-label confidence over equal-width bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def fit_temperature(
    probs: np.ndarray,
    y: np.ndarray,
    *,
    bounds: tuple[float, float] = (0.5, 5.0),
    min_validation_rows: int = 50,
    min_validation_errors: int = 5,
) -> TemperatureFit:
    """Temperature minimising validation log-loss within `bounds`.

    With too few rows, or too few misclassified rows, the optimum is driven by a
    handful of confident hits and runs to the lower bound (over-confidence that
    doubles test log-loss on the penguin pack), so T = 1 is kept and the reason said.
    """
    n = len(y)
    errors = int((probs.argmax(axis=1) != y).sum())
    reason = None
    if n < min_validation_rows:
        reason = f"validation set has {n} rows, fewer than {min_validation_rows}"
    elif errors < min_validation_errors:
        reason = (
            f"validation set has {errors} errors, fewer than {min_validation_errors}"
        )
    if reason is not None:
        return TemperatureFit(
            temperature=1.0,
            validation_rows=n,
            fitted=False,
            bounds=bounds,
            reason=reason,
        )
    result = minimize_scalar(
        lambda t: log_loss(apply_temperature(probs, t), y),
        bounds=bounds,
        method="bounded",
        options={"xatol": 1e-4},
    )
    return TemperatureFit(
        temperature=round(float(result.x), 4),
        validation_rows=n,
        fitted=True,
        bounds=bounds,
    )
