"""Scikit-learn models as a new user trains and exports them, for the packer tests.

Four datasets bundled with scikit-learn (nothing downloaded) and three model kinds,
each exported with skl2onnx's defaults (`to_onnx(clf, X)`: a double input, an
`output_label` and a ZipMap `output_probability`). Iris and digits keep their
integer targets; wine and breast cancer are labelled with their class names.
Each dataset is split once: the training rows are what the user packs, the
held-out rows are never shown to the packer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = ("iris", "wine", "digits", "breast_cancer")
KINDS = ("logreg", "mlp", "forest")
NAMED_LABELS = {"wine", "breast_cancer"}
LABEL_COLUMN = "target"
SEED = 0


@dataclass(frozen=True)
class Dataset:
    name: str
    train: pd.DataFrame
    """Features + `target`: what the user packs."""
    held_out: pd.DataFrame
    """Features + `target`: never seen by the packer."""

    @property
    def features(self) -> list[str]:
        return [c for c in self.train.columns if c != LABEL_COLUMN]

    def x(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[self.features].to_numpy(dtype=np.float64)


def load(name: str) -> Dataset:
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.data.copy()
    frame.columns = [str(c) for c in frame.columns]
    target = bunch.target.to_numpy()
    frame[LABEL_COLUMN] = (
        np.asarray(bunch.target_names)[target] if name in NAMED_LABELS else target
    )
    train, held_out = train_test_split(
        frame, test_size=0.25, stratify=frame[LABEL_COLUMN], random_state=SEED
    )
    return Dataset(name, train.reset_index(drop=True), held_out.reset_index(drop=True))


def train(kind: str, data: Dataset):  # type: ignore[no-untyped-def]
    """A small model of `kind` fitted on the training rows."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    models = {
        "logreg": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000)
        ),
        "mlp": lambda: make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=SEED),
        ),
        "forest": lambda: RandomForestClassifier(
            n_estimators=30, max_depth=8, random_state=SEED
        ),
    }
    model = models[kind]()
    with warnings.catch_warnings():
        # a small MLP stopped at max_iter is what a hurried user ships
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(data.x(data.train), data.train[LABEL_COLUMN].to_numpy())
    return model


def export(model, data: Dataset, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """`to_onnx(clf, X)` with skl2onnx's defaults, as its documentation shows."""
    from skl2onnx import to_onnx

    path.write_bytes(to_onnx(model, data.x(data.train)).SerializeToString())
    return path
