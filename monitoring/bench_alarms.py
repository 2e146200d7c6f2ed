"""Benchmark of the drift alarms: false alarms and detection power, per window.

For each dataset the reference is what a pack carries (train + validation rows,
`packs.writer.drift_reference`) and the model's outputs come from its model: the
default penguin pack's ONNX model, or a small scikit-learn model trained here on
the fit part of a stratified split (iris, wine, breast cancer: bring-your-own
data).
Windows are judged by the drift job's own verdict function (`run_drift`, with the
detector the settings pin, Evidently's report left out) at 200, 1,000 and 5,000
rows:

- `no shift`: fresh rows from the data's distribution, not repeats of the rows
  the reference holds: a smoothed bootstrap per class (a row of that class plus
  Gaussian noise with the class covariance times Silverman's one-dimensional
  bandwidth, shrunk so that mean and covariance are kept; non-negative features
  on a log scale),
  rounded to the data's recorded resolution and clipped to its range;
- `no shift, repeated rows`: the window is 250 fresh rows resampled (a client
  re-sending the same inputs): still no shift, so any alarm is false;
- `no shift, reference drawn like the windows`: fresh rows against a reference of
  the pack's size drawn from the same generator: the detector's own false-alarm
  rate, apart from any difference between the generator and the real rows;
- label shift: the class mix changes, each class's rows unchanged (penguins: the
  species mix of one island; others: 80% of the rows from the rarest class);
- single-feature faults on one feature (each feature in turn, windows spread
  over them): stuck at its median, a unit error (divided by 10), scale x0.95,
  x1.05, x0.9, x1.1, added noise of 1 and of 0.5 standard deviations.

Printed and written to `monitoring/RESULTS.md`: the share of windows that raised
an alarm (a false-alarm rate in the no-shift rows, detection power in the
others) and, from the no-shift rate p at 1,000 rows, the retraining requests per
1,000 runs that `k` consecutive disjoint windows give: 1000 * p_hi^k, with p_hi
the 95% upper bound of p (a run with no alarm at all still has a bound).

    .venv/bin/python -m monitoring.bench_alarms            # ~2-3 min, 2 cores
    .venv/bin/python -m monitoring.bench_alarms --windows 20 --no-write
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring.detector import DetectorConfig
from monitoring.drift import run_drift
from monitoring.settings import MonitoringSettings
from packs.format import LABEL_COLUMN

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "monitoring" / "RESULTS.md"
SIZES = (200, 1000, 5000)
REPEATED_DISTINCT_ROWS = 250

PredictProba = Callable[[np.ndarray], np.ndarray]


@dataclass
class Dataset:
    name: str
    features: list[str]
    labels: list[str]
    reference: pd.DataFrame
    predict_proba: PredictProba
    generator: SmoothedBootstrap
    label_shifts: dict[str, dict[str, float]]
    """Case name -> class mix of the shifted windows."""


class SmoothedBootstrap:
    """Fresh rows per class: a smoothed bootstrap that keeps each class's mean
    and covariance, rounded to the data's resolution and clipped to its range."""

    def __init__(self, frame: pd.DataFrame, features: list[str]):
        self.features = features
        x_all = frame[features].to_numpy(dtype="float64")
        self.low, self.high = x_all.min(axis=0), x_all.max(axis=0)
        # Non-negative features are smoothed on a log scale: Gaussian noise on a
        # skewed feature (a standard error with outliers) would reshape it.
        positive = np.where(x_all > 0, x_all, np.nan)
        self.offset = np.where(
            self.low >= 0, 0.01 * np.nanmedian(positive, axis=0), np.nan
        )
        self.decimals = [_decimals(frame[f].to_numpy()) for f in features]
        self.sd = x_all.std(axis=0)
        self.median = np.median(x_all, axis=0)
        self.priors: dict[str, float] = {}
        self.parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, float]] = {}
        counts = frame[LABEL_COLUMN].value_counts(normalize=True)
        d = len(features)
        for label, group in frame.groupby(LABEL_COLUMN):
            x = self._to_scale(group[features].to_numpy(dtype="float64"))
            mean = x.mean(axis=0)
            cov = np.cov(x, rowvar=False) + 1e-9 * np.eye(d)
            h = marginal_bandwidth(len(x))
            self.parts[str(label)] = (x, mean, np.linalg.cholesky(cov), h)
            self.priors[str(label)] = float(counts[label])

    def sample(
        self, rows: int, rng: np.random.Generator, mix: dict[str, float] | None = None
    ) -> np.ndarray:
        mix = mix or self.priors
        labels = list(mix)
        weights = np.array([mix[k] for k in labels])
        counts = rng.multinomial(rows, weights / weights.sum())
        out = []
        for label, n in zip(labels, counts, strict=True):
            x, mean, chol, h = self.parts[label]
            picked = x[rng.integers(0, len(x), n)]
            noise = rng.standard_normal((n, len(self.features))) @ chol.T
            out.append(mean + (picked - mean + h * noise) / np.sqrt(1 + h * h))
        rows_x = np.clip(self._from_scale(np.concatenate(out)), self.low, self.high)
        for j, places in enumerate(self.decimals):
            rows_x[:, j] = np.round(rows_x[:, j], places)
        return rows_x[rng.permutation(len(rows_x))]

    def _to_scale(self, x: np.ndarray) -> np.ndarray:
        logged = ~np.isnan(self.offset)
        out = x.copy()
        out[:, logged] = np.log(x[:, logged] + self.offset[logged])
        return out

    def _from_scale(self, x: np.ndarray) -> np.ndarray:
        logged = ~np.isnan(self.offset)
        out = x.copy()
        out[:, logged] = np.exp(x[:, logged]) - self.offset[logged]
        return out


def marginal_bandwidth(n: int) -> float:
    """Silverman's rule of thumb for one dimension, (4/3)^(1/5) n^(-1/5) (in units
    of the standard deviation; the noise's covariance is the class's).

    Every test of the detector looks at one-dimensional distributions (a feature,
    a feature's residual, a class probability), so each marginal of the generated
    rows is smoothed with the bandwidth that suits a one-dimensional density. The
    d-dimensional rule, (4/(d+2))^(1/(d+4)) n^(-1/(d+4)), is made for the joint
    density and grows with d (0.78 at d = 30 with 357 rows, against 0.33 here):
    it turned 38% of every feature's variance into Gaussian noise, a change of
    shape the tests then found in rows that should show no shift."""
    return float((4 / 3) ** 0.2 * n**-0.2)


def _decimals(values: np.ndarray) -> int:
    """Decimal places the values were recorded with (0 to 6)."""
    for places in range(7):
        if np.allclose(values, np.round(values, places), rtol=0, atol=1e-9):
            return places
    return 6


# ---- faults on one feature j --------------------------------------------------


def _stuck(x: np.ndarray, j: int, g: SmoothedBootstrap, _: np.random.Generator):
    x[:, j] = g.median[j]
    return x


def _scale(factor: float):
    def fault(x: np.ndarray, j: int, g: SmoothedBootstrap, _: np.random.Generator):
        x[:, j] *= factor
        return x

    return fault


def _noise(sds: float):
    def fault(x: np.ndarray, j: int, g: SmoothedBootstrap, rng: np.random.Generator):
        x[:, j] += rng.normal(0.0, sds * g.sd[j], len(x))
        return x

    return fault


FAULTS = {
    "stuck at median": _stuck,
    "unit error (/10)": _scale(0.1),
    "scale x0.95": _scale(0.95),
    "scale x1.05": _scale(1.05),
    "scale x0.90": _scale(0.90),
    "scale x1.10": _scale(1.10),
    "noise 1 sd": _noise(1.0),
    "noise 0.5 sd": _noise(0.5),
}


# ---- datasets -------------------------------------------------------------------


def _penguins() -> Dataset:
    from packs.build_default import LABELS, build_default_pack, penguin_frame
    from packs.format import REFERENCE_FILE
    from packs.loader import ModelPack, load_table, read_metadata

    pack_dir = ROOT / "data" / "packs" / "penguins"
    if not (pack_dir / REFERENCE_FILE).is_file():
        build_default_pack(pack_dir)
    meta = read_metadata(pack_dir)
    model = ModelPack.load(pack_dir, providers=["CPUExecutionProvider"])
    frame = penguin_frame()
    shifts = {}
    for island, group in frame.groupby("island"):
        shares = group[LABEL_COLUMN].value_counts(normalize=True)
        shifts[f"label shift: {island} mix"] = {
            label: float(shares.get(label, 0.0)) for label in LABELS
        }
    return Dataset(
        name="penguins (default pack)",
        features=meta.feature_names,
        labels=meta.labels,
        reference=load_table(pack_dir / REFERENCE_FILE),
        predict_proba=model.predict_proba,
        generator=SmoothedBootstrap(frame, meta.feature_names),
        label_shifts=shifts,
    )


def _sklearn(name: str) -> Dataset:
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from packs.splits import split_frame
    from packs.writer import drift_reference

    loader = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
    }
    bunch = loader[name]()
    features = [str(f).replace(" ", "_") for f in bunch.feature_names]
    frame = pd.DataFrame(bunch.data, columns=features)
    labels = [str(t) for t in bunch.target_names]
    frame[LABEL_COLUMN] = [labels[i] for i in bunch.target]
    splits = split_frame(frame, validation_fraction=0.2, test_fraction=0.2, seed=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(splits.train[features].to_numpy(), splits.train[LABEL_COLUMN])
    order = [list(model.classes_).index(label) for label in labels]
    reference, _ = drift_reference(splits, features)

    def predict_proba(x: np.ndarray) -> np.ndarray:
        return model.predict_proba(np.asarray(x, dtype="float64"))[:, order]

    reference["predicted_label"] = [
        labels[i] for i in predict_proba(reference[features].to_numpy()).argmax(1)
    ]
    rarest = frame[LABEL_COLUMN].value_counts().idxmin()
    mix = {label: 0.2 / (len(labels) - 1) for label in labels}
    mix[rarest] = 0.8
    return Dataset(
        name=f"{name} (scikit-learn, bring-your-own)",
        features=features,
        labels=labels,
        reference=reference,
        predict_proba=predict_proba,
        generator=SmoothedBootstrap(frame, features),
        label_shifts={f"label shift: 80% {rarest}": mix},
    )


DATASETS: dict[str, Callable[[], Dataset]] = {
    "penguins": _penguins,
    "iris": lambda: _sklearn("iris"),
    "wine": lambda: _sklearn("wine"),
    "breast_cancer": lambda: _sklearn("breast_cancer"),
}


# ---- the run ----------------------------------------------------------------------


def cases(data: Dataset) -> Iterator[tuple[str, Callable[..., np.ndarray]]]:
    g = data.generator

    def clean(rows: int, rng: np.random.Generator, i: int) -> np.ndarray:
        return g.sample(rows, rng)

    def repeated(rows: int, rng: np.random.Generator, i: int) -> np.ndarray:
        distinct = g.sample(REPEATED_DISTINCT_ROWS, rng)
        return distinct[rng.integers(0, len(distinct), rows)]

    yield "no shift", clean
    yield "no shift, repeated rows", repeated
    for case, mix in data.label_shifts.items():
        yield case, lambda rows, rng, i, mix=mix: g.sample(rows, rng, mix)
    for case, fault in FAULTS.items():

        def faulty(rows: int, rng: np.random.Generator, i: int, fault=fault):
            return fault(g.sample(rows, rng), i % len(g.features), g, rng)

        yield case, faulty


def judge(
    data: Dataset,
    x: np.ndarray,
    detector: DetectorConfig,
    min_rows: int,
    reference: pd.DataFrame | None = None,
):
    window = pd.DataFrame(x, columns=data.features)
    window["predicted_label"] = None  # the model's argmax is what is compared
    result = run_drift(
        window, data.reference if reference is None else reference,
        feature_names=data.features,
        min_window_rows=min_rows, detector=detector, model_version="bench",
        predict_proba=data.predict_proba, labels=data.labels, with_report=False,
    )  # fmt: skip
    return result


def bench_dataset(
    data: Dataset, *, windows: int, detector: DetectorConfig, min_rows: int, seed: int
) -> list[dict[str, object]]:
    rows_out: list[dict[str, object]] = []
    for case, make in cases(data):
        rates = alarm_rates(
            data, make, windows=windows, detector=detector, min_rows=min_rows,
            seed=lambda size: [seed, size, len(rows_out)],
        )  # fmt: skip
        rows_out.append({"dataset": data.name, "case": case, "rates": rates})
    # Computed last so that the other cells' random streams stay as they were.
    exact = alarm_rates(
        data, lambda rows, rng, i: data.generator.sample(rows, rng),
        windows=windows, detector=detector, min_rows=min_rows,
        seed=lambda size: [seed, size, 10_000], reference=generated_reference,
    )  # fmt: skip
    rows_out.insert(2, {"dataset": data.name, "case": EXACT_NULL, "rates": exact})
    return rows_out


#: False alarms of the detector itself: each window is judged against a
#: reference of the pack's size drawn from the same generator, so that nothing
#: differs but chance. Beside `no shift` (fresh rows against the pack's real
#: reference) it tells the detector's error rate from the generator's.
EXACT_NULL = "no shift, reference drawn like the windows"


def alarm_rates(
    data: Dataset,
    make: Callable[..., np.ndarray],
    *,
    windows: int,
    detector: DetectorConfig,
    min_rows: int,
    seed: Callable[[int], list[int]],
    reference: Callable[[Dataset, np.random.Generator], pd.DataFrame] | None = None,
) -> dict[int, float | None]:
    """Share of judged windows that raised an alarm, per window size (None when
    every window was skipped); `reference` draws a reference per window."""
    rates: dict[int, float | None] = {}
    for size in SIZES:
        rng = np.random.default_rng(seed(size))
        alarms = judged = 0
        for i in range(windows):
            ref = None if reference is None else reference(data, rng)
            result = judge(data, make(size, rng, i), detector, min_rows, ref)
            if result.skipped:
                continue
            judged += 1
            alarms += bool(result.dataset_drift)
        rates[size] = alarms / judged if judged else None
    return rates


def generated_reference(data: Dataset, rng: np.random.Generator) -> pd.DataFrame:
    """A reference of the pack's size drawn from the generator, with the model's
    predicted labels."""
    x_ref = data.generator.sample(len(data.reference), rng)
    reference = pd.DataFrame(x_ref, columns=data.features)
    reference[LABEL_COLUMN] = None
    reference["predicted_label"] = np.asarray(data.labels, dtype=object)[
        np.asarray(data.predict_proba(x_ref)).argmax(axis=1)
    ]
    return reference


def upper_bound(alarms: int, windows: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a binomial rate."""
    from scipy import stats

    if alarms >= windows:
        return 1.0
    return float(stats.beta.ppf(confidence, alarms + 1, windows - alarms))


def render(
    table: list[dict[str, object]],
    *,
    windows: int,
    settings: MonitoringSettings,
    seconds: float,
) -> str:
    k = settings.retrain_consecutive_windows
    lines = [
        "# Drift alarms: false alarms and detection power",
        "",
        "Written by `python -m monitoring.bench_alarms` (numbers from one run; "
        f"{windows} windows per cell, {seconds:.0f} s on this machine). Detector: "
        "K-S per feature, per feature relation (the feature's residual given the "
        "other features) and per class probability, chi-square on the predicted "
        f"label, Bonferroni at family-wise alpha = {settings.drift_alpha}; "
        f"windows need {settings.drift_min_window_rows} distinct rows. Each "
        "cell is the share of windows that raised an alarm: a false-alarm rate "
        "in the `no shift` rows, detection power in the others. Faults hit one "
        "feature, each feature in turn.",
        "",
        "| dataset | case | " + " | ".join(f"{s} rows" for s in SIZES) + " |",
        "|---|---|" + "---|" * len(SIZES),
    ]
    for row in table:
        rates = row["rates"]
        assert isinstance(rates, dict)
        cells = [
            "skipped" if rates[s] is None else f"{100 * rates[s]:.0f}%" for s in SIZES
        ]
        head = f"| {row['dataset']} | {row['case']} | "
        lines.append(head + " | ".join(cells) + " |")
    lines += ["", f"Retraining requests per 1,000 runs with no shift ({k} "
              "consecutive disjoint windows of 1,000 rows; 1000 x p_hi^k, p_hi the "
              "95% upper bound of the no-shift alarm rate):", ""]  # fmt: skip
    for row in table:
        if row["case"] != "no shift":
            continue
        rates = row["rates"]
        assert isinstance(rates, dict)
        rate = rates[1000] or 0.0
        p_hi = upper_bound(round(rate * windows), windows)
        lines.append(
            f"- {row['dataset']}: p = {100 * rate:.1f}%, p_hi = {100 * p_hi:.1f}%, "
            f"<= {1000 * p_hi**k:.2g} per 1,000 runs"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=50, help="windows per cell")
    parser.add_argument("--dataset", action="append", choices=sorted(DATASETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.windows < 1:
        parser.error("--windows must be at least 1")
    settings = MonitoringSettings()
    started = time.perf_counter()
    table: list[dict[str, object]] = []
    for name in args.dataset or list(DATASETS):
        data = DATASETS[name]()
        table += bench_dataset(
            data, windows=args.windows, detector=settings.detector(),
            min_rows=settings.drift_min_window_rows, seed=args.seed,
        )  # fmt: skip
    text = render(table, windows=args.windows, settings=settings,
                  seconds=time.perf_counter() - started)  # fmt: skip
    print(text, end="")
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
