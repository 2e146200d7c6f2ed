"""Stage 2: temperature scaling, p_i ∝ p_i^(1/T), with the pack's fitted T.

The fitted temperature is trusted only within the policy's bounds (clamped) and
only when it was fitted on enough validation rows (otherwise T = 1): a temperature
fitted on a small, nearly error-free set collapses towards 0 and ruins log-loss.
"""

from __future__ import annotations

import numpy as np

from guardrails.batch import Batch, Request, Trace, TraceColumn
from guardrails.policy import TemperaturePolicy
from packs.format import TemperatureFit


def resolve_temperature(
    policy: TemperaturePolicy, fit: TemperatureFit
) -> tuple[float, str]:
    """The temperature to use and a short note saying why."""
    if not policy.enabled:
        return 1.0, "disabled by policy"
    if not fit.fitted:
        return 1.0, "pack has no fitted temperature" + (
            f" ({fit.reason})" if fit.reason else ""
        )
    if fit.validation_rows < policy.min_validation_rows:
        return 1.0, (
            f"ignored: fitted on {fit.validation_rows} rows, policy needs "
            f"{policy.min_validation_rows}"
        )
    t = fit.temperature
    if t < policy.min or t > policy.max:
        clamped = min(max(t, policy.min), policy.max)
        return clamped, f"clamped from {t:.4g} to [{policy.min}, {policy.max}]"
    return t, "fitted"


def scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of `probabilities` raised to 1/T and renormalised.

    Dividing by the row maximum first keeps the largest entry at 1, so no row
    underflows to all zeros however small T is; zeros stay zeros.
    """
    top = probabilities.max(axis=1, keepdims=True)
    scaled = np.power(probabilities / top, 1.0 / temperature)
    scaled /= scaled.sum(axis=1, keepdims=True)
    return scaled


class TemperatureStage:
    name = "temperature"

    def __init__(self, policy: TemperaturePolicy, fit: TemperatureFit):
        self.temperature, note = resolve_temperature(policy, fit)
        self._trace: Trace = {
            "stage": self.name,
            "acted": self.temperature != 1.0,
            "temperature": self.temperature,
            "note": note,
        }

    def describe(self) -> str:
        return f"T = {self.temperature:g} ({self._trace['note']})"

    def apply(self, batch: Batch, request: Request) -> TraceColumn:
        if self.temperature != 1.0:
            batch.probabilities = scale(batch.probabilities, self.temperature)
        # Temperature is monotone per row: it never changes the top label.
        return TraceColumn(self._trace)
