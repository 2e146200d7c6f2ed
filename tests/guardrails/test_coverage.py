"""The coverage evaluation: resampling to a label mix, and the command end to end
on one small dataset."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from guardrails.coverage import evaluate, in_band, to_markdown
from guardrails.heldout_data import label_shift_sample


def test_label_shift_sample_follows_the_priors() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [100, 100, 100])
    rows = label_shift_sample(y, np.array([0.8, 0.2, 0.0]), 5000, rng)
    shares = np.bincount(y[rows], minlength=3) / len(rows)
    np.testing.assert_allclose(shares, [0.8, 0.2, 0.0], atol=0.02)


def test_label_shift_sample_skips_labels_the_rows_lack() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 1])
    rows = label_shift_sample(y, np.array([0.1, 0.1, 0.8]), 100, rng)
    assert len(rows) == 100 and set(y[rows]) <= {0, 1}


def test_band_edges() -> None:
    assert in_band(0.88, 0.1) and in_band(0.93, 0.1)
    assert not in_band(0.87, 0.1) and not in_band(0.94, 0.1)


def test_iris_without_shift_is_covered_and_the_table_says_so() -> None:
    rows = evaluate(["iris"], splits=30, seed=1)
    plain = [r for r in rows if r.shift == "none" and r.method == "conformal"]
    assert {(r.alpha, r.score) for r in plain} == {
        (0.1, "lac"),
        (0.1, "aps"),
        (0.05, "lac"),
        (0.05, "aps"),
    }
    assert all(r.splits == 30 for r in rows)
    for r in plain:
        assert r.coverage >= 1 - r.alpha - 0.04
    weighted = {r.method for r in rows if r.shift.startswith("dirichlet")}
    assert weighted == {
        "weighted",
        "weighted, randomized",
        "unweighted",
        "naive cumulative",
    }
    text = to_markdown(rows)
    assert "| iris | none | 0.1 | lac | conformal |" in text


def test_unknown_dataset_is_one_line_on_stderr_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "guardrails.cli", "coverage", "--datasets", "mnist"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown ['mnist']" in done.stderr
