"""Turn an ONNX classifier plus a labelled sample of its data into a model pack.

Shared by the default penguin builder and the bring-your-own packer, so both write
exactly the same format: training priors and the drift reference come from the fit
part, feature bounds from the whole training sample (a feature with one value there
is listed as constant, not given a range of width 0), the temperature is fitted on
the validation part, metrics on the test part; the pack's own policy is written
beside them.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from packs.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    log_loss,
)
from packs.calibration_scores import write_calibration
from packs.errors import PackerInputInvalid
from packs.format import (
    LABEL_COLUMN,
    METADATA_FILE,
    MODEL_FILE,
    POLICY_FILE,
    REFERENCE_FILE,
    TEST_FILE,
    VALIDATION_FILE,
    FeatureBounds,
    FeatureSpec,
    InputSpec,
    OutputSpec,
    PackMetadata,
    ReferenceInfo,
    TemperatureFit,
)
from packs.label_order import check_label_order, require_label_order
from packs.loader import ModelPack, metadata_json
from packs.policy_template import generic_policy
from packs.splits import Splits, split_frame

QUANTILES = (0.01, 0.05, 0.5, 0.95, 0.99)
REFERENCE_ROWS = 5000

__all__ = ["Splits", "split_frame", "write_pack"]


def feature_bounds(sample: pd.DataFrame, names: list[str]) -> dict[str, FeatureBounds]:
    out = {}
    for name in names:
        col = sample[name].astype(float)
        out[name] = FeatureBounds(
            min=float(col.min()),
            max=float(col.max()),
            quantiles={str(q): float(col.quantile(q)) for q in QUANTILES},
        )
    return out


def constant_features(bounds: dict[str, FeatureBounds]) -> list[str]:
    return [name for name, b in bounds.items() if b.min == b.max]


def training_priors(train: pd.DataFrame, labels: list[str]) -> dict[str, float]:
    counts = train[LABEL_COLUMN].value_counts()
    unknown = set(counts.index) - set(labels)
    if unknown:
        raise PackerInputInvalid(
            f"the data has labels the pack does not list: {sorted(unknown)}; "
            f"labels: {labels}"
        )
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
    output_source: str | None = None,
    policy_text: str | None = None,
    check_labels: bool = False,
    echo: Callable[[str], object] = lambda line: None,
) -> PackMetadata:
    """Write a complete, validated pack to `out_dir` (replaced atomically).

    `policy_text`: the pack's policy (default: the generic one for its labels).
    `check_labels`: refuse a pack whose held-out accuracy is below the majority
    rate (the labels are then almost surely in the wrong order)."""
    names = [f.name for f in features]
    missing = [c for c in [*names, LABEL_COLUMN] if c not in splits.train.columns]
    if missing:
        raise PackerInputInvalid(f"the data lacks columns {missing}")
    version = "sha256-" + hashlib.sha256(model_bytes).hexdigest()[:12]
    bounds = feature_bounds(splits.training_sample(), names)
    constant = constant_features(bounds)
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
        output=OutputSpec(onnx_name=onnx_output, labels=labels, source=output_source),
        training_priors=training_priors(splits.train, labels),
        feature_bounds=bounds,
        temperature=TemperatureFit(temperature=1.0, validation_rows=0, fitted=False),
        context_column=context_column,
        split=splits.described(),
        constant_features=constant,
    )
    for part in ("validation", "test"):
        training_priors(getattr(splits, part), labels)
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

        echo(f"running the model on {len(splits.validation)} validation rows")
        val_p, val_y = probs_and_y(splits.validation)
        write_calibration(staging, val_p, val_y, labels)
        echo(f"running the model on {len(splits.test)} test rows")
        test_p, test_y = probs_and_y(splits.test)
        held_out = check_label_order(
            np.concatenate([val_p, test_p]), np.concatenate([val_y, test_y]), labels
        )
        if check_labels:
            require_label_order(held_out, labels)
        echo("fitting the temperature on the validation rows")
        temp = fit_temperature(val_p, val_y, min_validation_rows=min_validation_rows)
        cal_p = apply_temperature(test_p, temp.temperature)
        majority = np.bincount(test_y, minlength=len(labels)).max() / len(test_y)
        metrics = {
            "test_rows": float(len(test_y)),
            "test_accuracy": float((test_p.argmax(1) == test_y).mean()),
            "test_majority_rate": float(majority),
            "test_log_loss": log_loss(test_p, test_y),
            "test_ece": expected_calibration_error(test_p, test_y),
            "test_log_loss_calibrated": log_loss(cal_p, test_y),
            "test_ece_calibrated": expected_calibration_error(cal_p, test_y),
        }
        reference, reference_info = drift_reference(splits, names)
        echo(f"writing the reference ({len(reference)} rows)")
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
        (staging / POLICY_FILE).write_text(
            policy_text
            or generic_policy(
                name=name,
                version=version,
                labels=labels,
                features=names,
                constant_features=constant,
            ),
            encoding="utf-8",
        )
        splits.test.to_parquet(staging / TEST_FILE, index=False)
        splits.validation.to_parquet(staging / VALIDATION_FILE, index=False)
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
