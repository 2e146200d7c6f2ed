"""Turn an ONNX classifier plus a labelled sample of its data into a model pack.

Shared by the default penguin builder and the bring-your-own packer, so both write
exactly the same format: training priors and feature bounds come from the training
part, the temperature is fitted on the validation part, metrics on the test part.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from packs.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    log_loss,
)
from packs.format import (
    LABEL_COLUMN,
    METADATA_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    TEST_FILE,
    FeatureBounds,
    FeatureSpec,
    InputSpec,
    OutputSpec,
    PackMetadata,
    ReferenceInfo,
    TemperatureFit,
)
from packs.loader import ModelPack, metadata_json

QUANTILES = (0.01, 0.05, 0.5, 0.95, 0.99)
REFERENCE_ROWS = 5000


@dataclass(frozen=True)
class Splits:
    """Labelled frames with the feature columns and `label` (extra columns kept)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def split_frame(
    frame: pd.DataFrame, *, validation_fraction: float, test_fraction: float, seed: int
) -> Splits:
    """Stratified train/validation/test split by `label`."""
    from sklearn.model_selection import train_test_split

    rest, test = train_test_split(
        frame, test_size=test_fraction, stratify=frame[LABEL_COLUMN], random_state=seed
    )
    val_share = validation_fraction / (1 - test_fraction)
    train, val = train_test_split(
        rest, test_size=val_share, stratify=rest[LABEL_COLUMN], random_state=seed
    )
    return Splits(*(f.reset_index(drop=True) for f in (train, val, test)))


def feature_bounds(train: pd.DataFrame, names: list[str]) -> dict[str, FeatureBounds]:
    out = {}
    for name in names:
        col = train[name].astype(float)
        out[name] = FeatureBounds(
            min=float(col.min()),
            max=float(col.max()),
            quantiles={str(q): float(col.quantile(q)) for q in QUANTILES},
        )
    return out


def training_priors(train: pd.DataFrame, labels: list[str]) -> dict[str, float]:
    counts = train[LABEL_COLUMN].value_counts()
    unknown = set(counts.index) - set(labels)
    if unknown:
        raise ValueError(f"data has labels the model does not know: {sorted(unknown)}")
    total = float(counts.sum())
    return {label: float(counts.get(label, 0)) / total for label in labels}


def drift_reference(
    splits: Splits, names: list[str], *, rows: int = REFERENCE_ROWS
) -> tuple[pd.DataFrame, ReferenceInfo]:
    """The drift reference: training and validation rows together (both drawn
    from the distribution the model was fitted for; the test split stays held
    out), at most `rows`. A drift test's power is capped by its smaller sample,
    so the reference takes every labelled row it may."""
    frame = pd.concat([splits.train, splits.validation], ignore_index=True)
    reference = frame.head(rows).copy()
    info = ReferenceInfo(
        splits=["train", "validation"],
        rows=len(reference),
        distinct_rows=len(reference.drop_duplicates(subset=names)),
    )
    return reference, info


def reference_size_warning(distinct_rows: int, window_rows: int) -> str | None:
    """A sentence when the reference is smaller than the drift window: then the
    reference, not the window, bounds what the drift tests can detect (a K-S
    test's effective sample size n*m/(n+m) never exceeds the smaller side)."""
    if distinct_rows >= window_rows:
        return None
    return (
        f"drift reference has {distinct_rows} distinct rows, fewer than the "
        f"drift window of {window_rows} rows: the reference caps the drift "
        "tests' power (pack more labelled rows to detect smaller shifts)"
    )


def write_pack(
    out_dir: Path,
    *,
    model_bytes: bytes,
    name: str,
    description: str,
    features: list[FeatureSpec],
    labels: list[str],
    onnx_input: str,
    onnx_output: str,
    splits: Splits,
    dtype: str = "float32",
    tensor_shape: list[int] | None = None,
    min_validation_rows: int = 50,
    context_column: str | None = None,
) -> PackMetadata:
    """Write a complete, validated pack to `out_dir` (replaced atomically)."""
    names = [f.name for f in features]
    missing = [c for c in [*names, LABEL_COLUMN] if c not in splits.train.columns]
    if missing:
        raise ValueError(f"data lacks columns {missing}")
    version = "sha256-" + hashlib.sha256(model_bytes).hexdigest()[:12]
    draft = PackMetadata(
        name=name,
        version=version,
        description=description,
        input=InputSpec(
            onnx_name=onnx_input,
            dtype=dtype,
            features=features,
            tensor_shape=tensor_shape,
        ),
        output=OutputSpec(onnx_name=onnx_output, labels=labels),
        training_priors=training_priors(splits.train, labels),
        feature_bounds=feature_bounds(splits.train, names),
        temperature=TemperatureFit(temperature=1.0, validation_rows=0, fitted=False),
        context_column=context_column,
    )
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pack-", dir=Path(out_dir).parent))
    try:
        (staging / MODEL_FILE).write_bytes(model_bytes)
        (staging / METADATA_FILE).write_text(metadata_json(draft))
        pack = ModelPack.load(staging, providers=["CPUExecutionProvider"])
        index = {label: i for i, label in enumerate(labels)}

        def probs_and_y(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
            x = frame[names].to_numpy(dtype=np.float32)
            return pack.predict_proba(x), frame[LABEL_COLUMN].map(index).to_numpy()

        val_p, val_y = probs_and_y(splits.validation)
        temp = fit_temperature(val_p, val_y, min_validation_rows=min_validation_rows)
        test_p, test_y = probs_and_y(splits.test)
        cal_p = apply_temperature(test_p, temp.temperature)
        metrics = {
            "test_rows": float(len(test_y)),
            "test_accuracy": float((test_p.argmax(1) == test_y).mean()),
            "test_log_loss": log_loss(test_p, test_y),
            "test_ece": expected_calibration_error(test_p, test_y),
            "test_log_loss_calibrated": log_loss(cal_p, test_y),
            "test_ece_calibrated": expected_calibration_error(cal_p, test_y),
        }
        reference, reference_info = drift_reference(splits, names)
        ref_p = pack.predict_proba(reference[names].to_numpy(dtype=np.float32))
        reference["predicted_label"] = [labels[i] for i in ref_p.argmax(1)]
        reference.to_parquet(staging / REFERENCE_FILE, index=False)
        meta = draft.model_copy(
            update={
                "temperature": temp,
                "metrics": {k: round(v, 6) for k, v in metrics.items()},
                "reference": reference_info,
            }
        )
        (staging / METADATA_FILE).write_text(metadata_json(meta))
        splits.test.to_parquet(staging / TEST_FILE, index=False)
        ModelPack.load(staging, providers=["CPUExecutionProvider"])
        out_dir = Path(out_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.chmod(0o755)
        staging.rename(out_dir)
        return meta
    finally:
        if staging.exists():
            shutil.rmtree(staging)
