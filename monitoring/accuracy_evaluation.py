"""How close the label-free accuracy estimates come to the realised accuracy.

    python -m monitoring.accuracy_evaluation [--windows 200] [--out FILE]

For each dataset of `guardrails.heldout_data`, the held-out rows are split once
into validation rows (40%: the temperature and the ATC threshold are fitted on
them, as the pack builder fits its temperature on its validation split) and test
rows. Each window is 1,000 test rows resampled to label priors drawn from a
Dirichlet distribution (concentration 0.1: severe, 1.0: moderate) or to the
training priors (no shift). The window's answers are the served argmax; its
realised accuracy is compared with each estimator, with and without the prior
adjustment. Prints a Markdown table of the mean absolute error in accuracy points.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from guardrails.heldout_data import DATASETS, HeldOut, label_shift_sample, load_heldout
from monitoring.accuracy import ACCURACY_ESTIMATORS, AccuracyEstimator
from packs.calibration import apply_temperature, fit_temperature

WINDOW_ROWS = 1000
SHIFTS: tuple[tuple[str, float | None], ...] = (
    ("none", None),
    ("dirichlet(1.0)", 1.0),
    ("dirichlet(0.1)", 0.1),
)
UNADJUSTED = " without prior adjustment"
VARIANTS = tuple(
    v for name in ACCURACY_ESTIMATORS for v in (name, f"{name}{UNADJUSTED}")
)


def evaluate_dataset(
    data: HeldOut, windows: int, seed: int
) -> dict[str, dict[str, float]]:
    """{shift: {variant: MAE in points, plus "accuracy": mean realised}}."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.y))
    cut = int(0.4 * len(order))
    val, test = order[:cut], order[cut:]
    # What the service serves: the pack builder's temperature, with its guards.
    served_t = fit_temperature(data.probabilities[val], data.y[val]).temperature
    p_val = apply_temperature(data.probabilities[val], served_t)
    p_test = apply_temperature(data.probabilities[test], served_t)
    y_test = data.y[test]
    train, k = data.training_priors, len(data.labels)
    estimator = AccuracyEstimator.fit(p_val, data.y[val], train)
    out: dict[str, dict[str, float]] = {}
    for shift, concentration in SHIFTS:
        errors: dict[str, list[float]] = {v: [] for v in VARIANTS}
        realised = []
        for _ in range(windows):
            priors = (
                train
                if concentration is None
                else rng.dirichlet(np.full(k, concentration))
            )
            rows = label_shift_sample(y_test, priors, WINDOW_ROWS, rng)
            p, y = p_test[rows], y_test[rows]
            accuracy = float((p.argmax(axis=1) == y).mean())
            realised.append(accuracy)
            adjusted = estimator.estimate(p)
            plain = estimator.estimate(p, adjust_priors=False)
            for name in ACCURACY_ESTIMATORS:
                errors[name].append(abs(adjusted[name] - accuracy) * 100)
                errors[f"{name}{UNADJUSTED}"].append(abs(plain[name] - accuracy) * 100)
        out[shift] = {v: float(np.mean(e)) for v, e in errors.items()}
        out[shift]["accuracy"] = float(np.mean(realised))
    return out


def to_markdown(results: dict[str, dict[str, dict[str, float]]], windows: int) -> str:
    head = "| dataset | shift | realised accuracy | " + " | ".join(VARIANTS) + " |"
    lines = [
        f"Mean absolute error in accuracy points over {windows} windows of "
        f"{WINDOW_ROWS} rows.",
        "",
        head,
        "|---|---|---:|" + "---:|" * len(VARIANTS),
    ]
    overall: dict[str, dict[str, list[float]]] = {}
    for name, shifts in results.items():
        for shift, row in shifts.items():
            cells = " | ".join(f"{row[v]:.2f}" for v in VARIANTS)
            lines.append(f"| {name} | {shift} | {row['accuracy']:.3f} | {cells} |")
            for v in VARIANTS:
                overall.setdefault(shift, {}).setdefault(v, []).append(row[v])
    for shift, by_variant in overall.items():
        cells = " | ".join(f"{np.mean(by_variant[v]):.2f}" for v in VARIANTS)
        lines.append(f"| **all datasets** | {shift} | | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitoring.accuracy_evaluation")
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown or args.windows < 1:
        problem = f"unknown datasets {unknown}" if unknown else "--windows must be >= 1"
        print(
            f"accuracy_evaluation: {problem}; datasets: {list(DATASETS)}",
            file=sys.stderr,
        )
        return 2
    results = {
        name: evaluate_dataset(
            load_heldout(name, args.seed), args.windows, args.seed + i
        )
        for i, name in enumerate(names)
    }
    text = to_markdown(results, args.windows)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
