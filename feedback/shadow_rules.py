"""What a shadow run must show for the promotion gate to pass (`feedback.gate`).

Kept apart from the gate so that command lines can show the defaults without
importing the regression machinery."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShadowRules:
    """What a shadow run must show for the gate to pass."""

    min_rows: int = 200
    accuracy_margin: float = 0.02
    """The candidate's estimated accuracy may be this much below the served one."""
    min_confident_agreement: float = 0.95
    """Agreement on rows the served model answered with probability >= 0.9."""
