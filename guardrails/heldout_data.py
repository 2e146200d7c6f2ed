"""Held-out model outputs for offline evaluation: the penguins (with their islands)
and the four scikit-learn datasets of the bring-your-own matrix (iris, wine, digits,
breast cancer), each with a model trained here in a second or two.

Every dataset is split once, stratified: half trains the model, the other half is
held out as (n, k) probabilities with the true labels. The conformal coverage and
the label-free accuracy evaluations both draw their calibration, validation and
test rows from that held-out half, so their figures come from rows no model saw.
Everything is offline: palmerpenguins and scikit-learn ship their data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DATASETS: tuple[str, ...] = ("penguins", "iris", "wine", "digits", "breast_cancer")


@dataclass(frozen=True)
class HeldOut:
    """One model's output on rows it never trained on."""

    name: str
    labels: list[str]
    training_priors: np.ndarray
    """(k,) label shares of the rows the model trained on."""
    probabilities: np.ndarray
    """(n, k) the model's probabilities on the held-out rows."""
    y: np.ndarray
    """(n,) true label index per held-out row."""
    groups: np.ndarray | None = None
    """(n,) deployment site per row where the data has one (penguins: island)."""


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn import datasets

    loaders: dict[str, Callable[..., object]] = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
    }
    bunch = loaders[name]()
    x = np.asarray(bunch.data, dtype=np.float64)  # type: ignore[attr-defined]
    y = np.asarray(bunch.target)  # type: ignore[attr-defined]
    names = [str(n) for n in bunch.target_names]  # type: ignore[attr-defined]
    return x, y, names


def load_heldout(name: str, seed: int = 0) -> HeldOut:
    """Train `name`'s model on half of its rows; the other half's output."""
    from sklearn.model_selection import train_test_split

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; datasets: {DATASETS}")
    groups = None
    if name == "penguins":
        from packs.build_default import LABELS, penguin_frame, train_model
        from packs.format import LABEL_COLUMN

        frame = penguin_frame()
        train, held = train_test_split(
            frame, test_size=0.5, stratify=frame[LABEL_COLUMN], random_state=seed
        )
        model = train_model(train, seed=seed)
        features = [c for c in frame.columns if c not in (LABEL_COLUMN, "island")]
        p = model.predict_proba(held[features].to_numpy(dtype=np.float32))
        index = {label: i for i, label in enumerate(LABELS)}
        y = held[LABEL_COLUMN].map(index).to_numpy()
        train_y = train[LABEL_COLUMN].map(index).to_numpy()
        labels, groups = list(LABELS), held["island"].to_numpy(dtype=str)
    else:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x, target, labels = _sklearn(name)
        x_train, x_held, train_y, y = train_test_split(
            x, target, test_size=0.5, stratify=target, random_state=seed
        )
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(x_train, train_y)
        p = model.predict_proba(x_held)
    k = len(labels)
    priors = np.bincount(train_y, minlength=k) / len(train_y)
    return HeldOut(name, labels, priors, np.asarray(p, float), np.asarray(y), groups)


def label_shift_sample(
    y: np.ndarray, priors: np.ndarray, rows: int, rng: np.random.Generator
) -> np.ndarray:
    """Row indices (with replacement) whose labels follow `priors`: each label's
    count is drawn from the multinomial, then rows of that label uniformly. Labels
    absent from `y` are left out and the priors renormalised over the rest."""
    k = len(priors)
    present = np.bincount(y, minlength=k) > 0
    p = np.where(present, priors, 0.0)
    p = p / p.sum()
    counts = rng.multinomial(rows, p)
    picks = [
        rng.choice(np.flatnonzero(y == label), size=count)
        for label, count in enumerate(counts)
        if count
    ]
    return np.concatenate(picks)
