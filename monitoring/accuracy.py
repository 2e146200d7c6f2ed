"""The served model's accuracy, estimated from its probabilities before labels.

An `AccuracyEstimator` is fitted once on labelled held-out rows (the pack's
calibration set: the validation split's probabilities and labels) and then reads
any window of served probabilities:

    recalibrate  a temperature fitted on the held-out rows, bounded to
                 [0.25, 4], with no minimum number of errors: a model that made
                 no error there is told it may be confident (the serving
                 temperature refuses such fits because they ruin log-loss; for
                 an accuracy estimate they are the evidence there is)
    adjust       the window's label priors estimated by EM (Saerens et al. 2002)
                 and the probabilities reweighted by pi_window/pi_train: under
                 label shift the training-mix probabilities are miscalibrated
    cbpe         confidence-based (in the style of NannyML's CBPE, which also
                 calibrates on reference data first): the mean probability of
                 each row's served answer
    atc          average thresholded confidence (Garg et al. 2022): the share of
                 rows whose answer's probability is above t, where t is fitted on
                 the held-out rows so that this share equals their accuracy

The answers judged are the ones served (argmax of the served probabilities); only
the probabilities used to judge them are recalibrated and adjusted.
`ACCURACY_ESTIMATORS` names the estimators in the order gauges and dashboards
show them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from guardrails.em import em_priors
from guardrails.priors import adjust
from packs.calibration import apply_temperature, fit_temperature

ACCURACY_ESTIMATORS: tuple[str, ...] = ("cbpe", "atc")
RECALIBRATION_BOUNDS = (0.25, 4.0)


def prior_adjusted(
    probabilities: np.ndarray, training_priors: np.ndarray
) -> np.ndarray:
    """The window's probabilities adjusted to its own EM-estimated priors."""
    priors, _ = em_priors(probabilities, training_priors)
    weights = priors / np.maximum(training_priors, 1e-12)
    out, _ = adjust(probabilities.copy(), weights)
    return out


def answer_confidence(probabilities: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """(n,) probability of each row's answer."""
    return probabilities[np.arange(len(probabilities)), answers]


@dataclass(frozen=True)
class AccuracyEstimator:
    training_priors: np.ndarray
    temperature: float
    """Recalibration temperature fitted on the held-out rows."""
    atc_threshold: float
    heldout_accuracy: float
    """Accuracy of the served answers on the held-out rows."""

    @classmethod
    def fit(
        cls, probabilities: np.ndarray, y: np.ndarray, training_priors: np.ndarray
    ) -> AccuracyEstimator:
        """Fit on held-out served probabilities (n, k) and their true labels."""
        if not len(y):
            raise ValueError("an accuracy estimator needs held-out rows")
        fit = fit_temperature(
            probabilities,
            y,
            bounds=RECALIBRATION_BOUNDS,
            min_validation_rows=0,
            min_validation_errors=0,
        )
        answers = probabilities.argmax(axis=1)
        accuracy = float((answers == y).mean())
        recalibrated = apply_temperature(probabilities, fit.temperature)
        confidence = answer_confidence(recalibrated, answers)
        # The share above t is 1 - F(t): t is the (1 - accuracy) quantile.
        t = float(np.quantile(confidence, 1 - accuracy, method="lower"))
        if accuracy == 1.0:
            t = float(np.nextafter(confidence.min(), -np.inf))
        return cls(np.asarray(training_priors, float), fit.temperature, t, accuracy)

    def judged(self, probabilities: np.ndarray, adjust_priors: bool) -> np.ndarray:
        """The window's probabilities recalibrated (and adjusted) for judging."""
        out = apply_temperature(probabilities, self.temperature)
        return prior_adjusted(out, self.training_priors) if adjust_priors else out

    def estimate(
        self,
        probabilities: np.ndarray,
        *,
        answers: np.ndarray | None = None,
        adjust_priors: bool = True,
    ) -> dict[str, float]:
        """{estimator: estimated accuracy} of a window's served answers (label
        index per row; default the argmax), NaN for an empty window."""
        if not len(probabilities):
            return dict.fromkeys(ACCURACY_ESTIMATORS, float("nan"))
        if answers is None:
            answers = probabilities.argmax(axis=1)
        confidence = answer_confidence(
            self.judged(probabilities, adjust_priors), answers
        )
        return {
            "cbpe": float(confidence.mean()),
            "atc": float((confidence > self.atc_threshold).mean()),
        }
