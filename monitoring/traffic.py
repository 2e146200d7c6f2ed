"""Traffic for the drift demo and tests, sampled from the real penguin data.

`like_training(n)` draws rows as the model saw them in training (all islands);
`drifted(n)` is what a camera moved to the Biscoe Gentoo colony would send, read
by a scale that weighs 300 g heavy: the species mix and every measurement's
distribution change, while each row stays inside the training range (so the
input-bounds guardrail lets it through and only drift detection notices).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
SCALE_BIAS_G = 300.0


def _penguins() -> pd.DataFrame:
    from packs.build_default import penguin_frame

    return penguin_frame()


def like_training(n: int, *, seed: int = 0) -> pd.DataFrame:
    """`n` rows resampled from all penguins, with their species as `label`."""
    frame = _penguins()
    return frame.sample(n=n, replace=True, random_state=seed).reset_index(drop=True)


def drifted(
    n: int, *, seed: int = 0, max_body_mass_g: float | None = None
) -> pd.DataFrame:
    """`n` Gentoo rows from Biscoe with a biased scale (capped at `max_body_mass_g`)."""
    frame = _penguins()
    gentoo = frame[(frame["label"] == "Gentoo") & (frame["island"] == "Biscoe")]
    out = gentoo.sample(n=n, replace=True, random_state=seed).reset_index(drop=True)
    mass = out["body_mass_g"] + SCALE_BIAS_G
    if max_body_mass_g is not None:
        mass = np.minimum(mass, max_body_mass_g)
    out["body_mass_g"] = mass
    return out


def instances(frame: pd.DataFrame) -> list[dict[str, float]]:
    """Request rows (named features) for /predict."""
    return frame[FEATURES].to_dict("records")  # type: ignore[return-value]
