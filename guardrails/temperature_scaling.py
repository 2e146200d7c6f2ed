"""Temperature scaling, p_i ∝ p_i^(1/T): which T to trust, and applying it.

The fitted temperature is trusted only within the policy's bounds (clamped) and
only when it was fitted on enough validation rows (otherwise T = 1): a temperature
fitted on a small, nearly error-free set collapses towards 0 and ruins log-loss.
Shared by the temperature stage and the online prior estimate (which sees the
probabilities as the stage leaves them).
"""

from __future__ import annotations

import numpy as np

from guardrails.policy import TemperaturePolicy
from guardrails.rowwise import row_max, row_sum
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
    top = row_max(probabilities)[:, None]
    scaled = np.power(probabilities / top, 1.0 / temperature)
    scaled /= row_sum(scaled)[:, None]
    return scaled
