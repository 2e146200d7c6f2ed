"""The pack's calibration set: the model's raw probabilities on the validation
split, with the true labels, kept for split-conformal prediction sets.

Stored as `calibration.parquet` with one float column per label (`p0`, `p1`, ... in
output order) and `label` (the label's name). Raw model output is kept rather than
conformity scores, because the score, the temperature and the deployment prior are
chosen by the policy at serving time and the scores are recomputed from these.
Packs built before this file existed have none; the loader then returns None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packs.errors import PackMetadataInvalid
from packs.format import LABEL_COLUMN, PROBABILITY_ROUNDING

CALIBRATION_FILE = "calibration.parquet"


@dataclass(frozen=True)
class CalibrationSet:
    """Held-out rows the model never trained on, for conformal calibration."""

    probabilities: np.ndarray
    """(n, k) raw model probabilities, columns in the pack's label order."""
    labels: np.ndarray
    """(n,) index of each row's true label."""

    @property
    def label_frequencies(self) -> np.ndarray:
        """(k,) share of rows per label (the calibration set's own priors)."""
        k = self.probabilities.shape[1]
        return np.bincount(self.labels, minlength=k) / max(len(self.labels), 1)


def write_calibration(
    pack_dir: Path, probabilities: np.ndarray, y: np.ndarray, labels: list[str]
) -> None:
    """Write `calibration.parquet` into a pack directory being built."""
    import pandas as pd

    # Tree ensembles exported by skl2onnx can answer a hair below 0 (float
    # rounding); such values are zeros, kept as zeros.
    p = _clipped(np.asarray(probabilities, dtype=np.float64), pack_dir)
    frame = pd.DataFrame({f"p{j}": p[:, j] for j in range(len(labels))})
    frame[LABEL_COLUMN] = [labels[i] for i in np.asarray(y, dtype=int)]
    frame.to_parquet(Path(pack_dir) / CALIBRATION_FILE, index=False)


def read_calibration(pack_dir: Path, labels: list[str]) -> CalibrationSet | None:
    """The pack's calibration set, or None when the pack has none."""
    path = Path(pack_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    import pandas as pd

    frame = pd.read_parquet(path)
    columns = [f"p{j}" for j in range(len(labels))]
    missing = [c for c in [*columns, LABEL_COLUMN] if c not in frame.columns]
    if missing:
        raise PackMetadataInvalid(path, f"missing columns {missing}")
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(frame[LABEL_COLUMN].astype(str)) - set(index))
    if unknown:
        raise PackMetadataInvalid(path, f"unknown labels {unknown}; labels: {labels}")
    probabilities = _clipped(frame[columns].to_numpy(dtype=np.float64), path)
    y = frame[LABEL_COLUMN].astype(str).map(index).to_numpy(dtype=np.intp)
    return CalibrationSet(probabilities, y)


def _clipped(probabilities: np.ndarray, where: Path) -> np.ndarray:
    """Probabilities with rounding-error negatives set to 0; anything else that is
    not a finite non-negative number makes the pack invalid."""
    if (
        not np.isfinite(probabilities).all()
        or (probabilities < -PROBABILITY_ROUNDING).any()
    ):
        raise PackMetadataInvalid(
            Path(where),
            "calibration probabilities must be finite and >= 0 "
            f"(rounding down to -{PROBABILITY_ROUNDING:g} is tolerated)",
        )
    return np.clip(probabilities, 0.0, None)
