"""Conformal prediction sets: the labels that hold the true one with probability
at least 1 - alpha, calibrated on the pack's validation split and, under a
deployment prior, reweighted for it (see `guardrails.conformal_sets`).

Runs after the priors and the blacklist, on the probabilities the answer is chosen
from. A blacklisted label can still be in a set: the set is a statement about the
true label, not a choice of answer. In `abstain` mode rows with too large or empty
sets abstain, with the set size in the trace.
"""

from __future__ import annotations

import numpy as np

from guardrails.batch import Batch, Stage, StageSetup, Trace, TraceColumn
from guardrails.conformal_sets import SetCalibrator
from guardrails.policy import ConformalPolicy
from guardrails.rowwise import row_count
from guardrails.temperature_scaling import resolve_temperature, scale
from packs.calibration_scores import CalibrationSet


class ConformalStage(Stage):
    name = "conformal"
    reasons = ("large_prediction_set", "empty_prediction_set")

    @classmethod
    def build(cls, setup: StageSetup) -> ConformalStage:
        policy, meta = setup.policy, setup.meta
        temperature, _ = resolve_temperature(policy.temperature, meta.temperature)
        train = np.array([meta.training_priors[x] for x in meta.labels], float)
        return cls(policy.conformal, setup.calibration, train, temperature)

    def __init__(
        self,
        policy: ConformalPolicy,
        calibration: CalibrationSet | None,
        training_priors: np.ndarray,
        temperature: float = 1.0,
    ):
        self.policy = policy
        self.calibrator: SetCalibrator | None = None
        note = (
            "disabled by policy"
            if not policy.enabled
            else "pack has no calibration set"
        )
        if policy.enabled and calibration is not None and len(calibration.labels):
            raw = calibration.probabilities
            probabilities = scale(raw / raw.sum(axis=1, keepdims=True), temperature)
            self.calibrator = SetCalibrator(
                probabilities,
                calibration.labels,
                training_priors,
                score=policy.score,
                alpha=policy.alpha,
                raps_lambda=policy.raps_lambda,
                raps_k_reg=policy.raps_k_reg,
                randomize=policy.randomize,
                cache_size=policy.cached_priors,
            )
            note = f"{len(calibration.labels)} calibration rows"
        self._quiet: Trace = {"stage": self.name, "acted": False, "note": note}
        if self.calibrator is not None:
            self._quiet.update(score=policy.score, alpha=policy.alpha, mode=policy.mode)

    def apply(self, batch: Batch, prepared: None) -> TraceColumn:
        if self.calibrator is None:
            return TraceColumn(self._quiet)
        p = self.policy
        sets = self.calibrator.sets(
            batch.probabilities, batch.prior_weights, p.weighted
        )
        batch.prediction_sets = sets
        if p.mode == "report":
            return TraceColumn(self._quiet)
        size = row_count(sets)
        before = batch.abstain_code.copy()
        if p.max_set_size is not None:
            batch.abstain(size > p.max_set_size, "large_prediction_set")
        if p.abstain_on_empty:
            batch.abstain(size == 0, "empty_prediction_set")
        rows = np.flatnonzero(batch.abstain_code != before)
        entries = [
            {**self._quiet, "acted": True, "set_size": int(size[i])}
            for i in rows.tolist()
        ]
        return TraceColumn(self._quiet, rows, entries)
