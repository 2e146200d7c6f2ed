"""Label-shift estimation by EM (Saerens, Latinne & Decaestecker, 2002).

Given posteriors p(y|x) from a model trained under priors π_train, EM alternates
re-weighting the posteriors to the current prior estimate and averaging them into
a new estimate. The likelihood-ratio test of the same paper says whether the new
priors explain the rows better than the training priors by more than chance.
Both assume the posteriors are calibrated, which is why temperature comes first.
"""

from __future__ import annotations

import numpy as np

#: Training priors are floored at this for the division in the E step.
_EPS = 1e-12


def _train(train_priors: np.ndarray) -> np.ndarray:
    t = np.maximum(np.asarray(train_priors, dtype=float), _EPS)
    return t / t.sum()


def _reweight(probs: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    q = probs * ratio
    total = q.sum(axis=1, keepdims=True)
    # A row whose every label has prior 0 by now carries no information.
    total[total <= 0] = np.inf
    return q / total


def em_priors(
    probs: np.ndarray, train_priors: np.ndarray, max_iter: int = 100, tol: float = 1e-6
) -> tuple[np.ndarray, int]:
    """EM estimate of the deployment priors of `probs` (n, k); returns
    (priors, iterations used). With no rows it returns the training priors."""
    train = _train(train_priors)
    priors = train.copy()
    if len(probs) == 0:
        return priors, 0
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        new = _reweight(probs, priors / train).mean(axis=0)
        new /= new.sum()
        step = float(np.max(np.abs(new - priors)))
        priors = new
        if step < tol:
            break
    return priors, iterations


def log_likelihood_ratio(
    probs: np.ndarray, train_priors: np.ndarray, new_priors: np.ndarray
) -> float:
    """log L(new) - log L(train) of the rows, up to the shared p(x) terms:
    Σ_n log Σ_y p(y|x_n) π_new(y)/π_train(y) - Σ_n log Σ_y p(y|x_n)."""
    train = _train(train_priors)
    with np.errstate(divide="ignore"):
        new = np.log((probs * (np.asarray(new_priors) / train)).sum(axis=1))
        old = np.log(probs.sum(axis=1))
    return float(np.sum(new - old))


def likelihood_ratio_test(
    probs: np.ndarray,
    train_priors: np.ndarray,
    new_priors: np.ndarray,
    null_priors: np.ndarray | None = None,
) -> float:
    """p-value of "the priors are still `null_priors`" (default: the training
    priors): 2·(log L(new) − log L(null)) is χ² with k − 1 degrees of freedom
    under that hypothesis when `new_priors` is the EM estimate for `probs`."""
    from scipy.special import gammaincc  # lazy: scipy is off the request path

    if len(probs) == 0:
        return 1.0
    statistic = 2.0 * log_likelihood_ratio(probs, train_priors, new_priors)
    if null_priors is not None:
        statistic -= 2.0 * log_likelihood_ratio(probs, train_priors, null_priors)
    if not np.isfinite(statistic):
        return 1.0
    dof = len(train_priors) - 1
    return float(gammaincc(dof / 2.0, max(statistic, 0.0) / 2.0))
