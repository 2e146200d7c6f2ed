"""The label-shift evaluation on one real dataset: known priors help under severe
shift, the guarded estimate recovers most of it and costs nothing unshifted."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from guardrails.shift_evaluation import build_case, evaluate_case, to_markdown


def test_guarded_estimate_recovers_the_known_prior_gain_on_breast_cancer(
    tmp_path: Path,
) -> None:
    case = build_case("breast_cancer", "logreg", tmp_path)
    windows = evaluate_case(case, sizes=(200,), alphas=(0.1,), windows=8)
    shifted = [w for w in windows if w.shift == "α=0.1"]
    unshifted = [w for w in windows if w.shift == "none"]
    assert len(shifted) == len(unshifted) == 8

    def mean(ws, variant: str) -> float:  # type: ignore[no-untyped-def]
        return float(np.mean([w.accuracy[variant] for w in ws]))

    gain = mean(shifted, "known") - mean(shifted, "raw")
    assert gain > 0.01
    assert mean(shifted, "guarded") - mean(shifted, "raw") >= 0.8 * gain
    assert mean(unshifted, "raw") - mean(unshifted, "guarded") <= 0.0005
    # the policy's smoothing costs (almost) no log-loss against exact priors
    known = np.mean([w.log_loss["known"] for w in shifted])
    exact = np.mean([w.log_loss["exact"] for w in shifted])
    assert known <= exact + 0.002
    assert "| breast_cancer | α=0.1 | 200 | 8 |" in to_markdown(windows)
