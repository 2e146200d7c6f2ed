"""The pack's calibration set: what it stores and what it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from packs.calibration_scores import read_calibration, write_calibration
from packs.errors import PackMetadataInvalid

LABELS = ["a", "b"]


def test_rounding_error_below_zero_is_stored_and_read_as_zero(tmp_path: Path) -> None:
    # What skl2onnx's tree ensembles answer for a leaf with no row of a class.
    p = np.array([[1.0 + 3e-8, -3e-8], [0.25, 0.75]])
    write_calibration(tmp_path, p, np.array([0, 1]), LABELS)
    calibration = read_calibration(tmp_path, LABELS)
    assert calibration is not None
    assert (calibration.probabilities >= 0).all()
    assert calibration.probabilities[0, 1] == 0.0
    assert calibration.labels.tolist() == [0, 1]


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf")])
def test_a_probability_that_is_not_rounding_error_is_refused(
    tmp_path: Path, bad: float
) -> None:
    with pytest.raises(PackMetadataInvalid, match="calibration probabilities"):
        write_calibration(
            tmp_path, np.array([[1.0, bad], [0.5, 0.5]]), np.array([0, 1]), LABELS
        )
