"""Bring your own model: pack any ONNX classifier that outputs class probabilities.

Given the ONNX file, its label names (in output column order) and a labelled sample
of its data (CSV or Parquet with a label column), this checks the model's input and
output shapes, splits the sample, and writes a pack with training priors, feature
bounds, a reference sample, a fitted temperature and held-out metrics.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from packs.format import LABEL_COLUMN, FeatureSpec, PackMetadata
from packs.writer import split_frame, write_pack


def read_frame(path: Path) -> pd.DataFrame:
    path = Path(path)
    if path.suffix.lower() in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    raise ValueError(f"data file must be .csv or .parquet, got {path.name}")


def _probability_output(model) -> str:  # type: ignore[no-untyped-def]
    """The single 2-D float output (skl2onnx also emits a `label` output)."""
    candidates = [
        o.name
        for o in model.graph.output
        if o.type.tensor_type.elem_type in (1, 11)  # FLOAT, DOUBLE
        and len(o.type.tensor_type.shape.dim) == 2
    ]
    if len(candidates) != 1:
        raise ValueError(
            f"cannot tell which output holds probabilities among {candidates}; "
            "pass --output-name"
        )
    return candidates[0]


def pack_onnx(
    model_path: Path,
    data_path: Path,
    out_dir: Path,
    *,
    labels: list[str],
    name: str,
    label_column: str = LABEL_COLUMN,
    features: list[str] | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> PackMetadata:
    """Write a pack for `model_path`; features default to every non-label column."""
    import onnx

    model_bytes = Path(model_path).read_bytes()
    model = onnx.load_from_string(model_bytes)
    inputs = [i.name for i in model.graph.input]
    if input_name is None:
        if len(inputs) != 1:
            raise ValueError(f"model has inputs {inputs}; pass --input-name")
        input_name = inputs[0]
    output_name = output_name or _probability_output(model)
    frame = read_frame(data_path)
    if label_column not in frame.columns:
        raise ValueError(f"data has no label column {label_column!r}")
    frame = frame.rename(columns={label_column: LABEL_COLUMN})
    frame[LABEL_COLUMN] = frame[LABEL_COLUMN].astype(str)
    names = features or [c for c in frame.columns if c != LABEL_COLUMN]
    elem = next(i for i in model.graph.input if i.name == input_name).type.tensor_type
    dims = [d.dim_value or None for d in elem.shape.dim][1:]
    tensor_shape = [int(d) for d in dims if d] if len(dims) > 1 and all(dims) else None
    splits = split_frame(
        frame,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    return write_pack(
        Path(out_dir),
        model_bytes=model_bytes,
        name=name,
        description=f"Packed from {Path(model_path).name} with {Path(data_path).name}.",
        features=[FeatureSpec(name=n) for n in names],
        labels=labels,
        onnx_input=input_name,
        onnx_output=output_name,
        splits=splits,
        dtype="float64" if elem.elem_type == 11 else "float32",
        tensor_shape=tensor_shape,
    )
