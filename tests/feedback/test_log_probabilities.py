"""Reading the served probabilities of the latest answered rows of the columnar
prediction log."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np

from feedback.log_probabilities import read_answered_probabilities
from feedback.log_reader import PredictionLogReader
from feedback.models import utcnow
from tests.feedback.helpers import LABELS, log_predictions, prediction


def test_latest_answered_rows_come_back_oldest_first_in_label_order(
    tmp_path: Path,
) -> None:
    start = utcnow() - timedelta(minutes=5)
    rows = [
        prediction(label="Adelie", created_at=start + timedelta(seconds=i))
        for i in range(5)
    ]
    rows.append(prediction(label=None, created_at=start + timedelta(seconds=9)))
    rows.append(prediction(label="Gentoo", created_at=start + timedelta(seconds=10)))
    rows.append(
        prediction(
            label="Adelie",
            model_version="other",
            created_at=start + timedelta(seconds=11),
        )
    )
    reader = log_predictions(tmp_path, rows)
    p, answers = read_answered_probabilities(
        reader, limit_rows=3, labels=list(reversed(LABELS)), model_version="pack-v1"
    )
    # The abstained row and the other version's row are left out.
    assert answers.tolist() == [2, 2, 0]  # Adelie, Adelie, Gentoo (reversed order)
    np.testing.assert_allclose(p[0], [0.05, 0.05, 0.9], rtol=1e-6)
    everything, _ = read_answered_probabilities(reader, limit_rows=100, labels=LABELS)
    assert len(everything) == 7


def test_an_empty_log_gives_an_empty_window(tmp_path: Path) -> None:
    p, answers = read_answered_probabilities(
        PredictionLogReader(tmp_path), limit_rows=10, labels=LABELS
    )
    assert p.shape == (0, 3) and answers.shape == (0,)
