"""Bring your own model: pack any ONNX classifier as it was exported.

Given the ONNX file and a labelled sample of its data (CSV or Parquet with a label
column), this finds the model's input and its probability output (skl2onnx's
default ZipMap, a plain tensor, or logits with `logits=True`), checks the labels and
their order against the sample, splits it (or takes validation and test files) and
writes a pack with training priors, feature bounds, a reference sample, a fitted
temperature, held-out metrics and a generic policy for the pack's labels.

Every mistake of the person packing raises `PackerInputInvalid` with one line that
says what was wrong and what to do instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from packs.errors import PackerInputInvalid
from packs.format import LABEL_COLUMN, FeatureSpec, PackMetadata
from packs.onnx_outputs import ProbabilityOutput, probability_output
from packs.splits import Splits, given_splits, split_frame
from packs.writer import write_pack

#: Rows a probability output must sum to 1 within (float32 arithmetic).
_SUM_TOLERANCE = 1e-3
_PROBE_ROWS = 256


def read_frame(path: Path) -> pd.DataFrame:
    path = Path(path)
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PackerInputInvalid(f"cannot read {path}: {problem}") from None
    raise PackerInputInvalid(f"data file must be .csv or .parquet, got {path.name}")


def _load_model(path: Path):  # type: ignore[no-untyped-def]
    import onnx

    try:
        return onnx.load_from_string(Path(path).read_bytes())
    except Exception as exc:  # protobuf's DecodeError and friends
        raise PackerInputInvalid(
            f"{path} is not an ONNX model: {str(exc).splitlines()[0]}"
        ) from None


def _model_input(model, input_name: str | None):  # type: ignore[no-untyped-def]
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if input_name is None:
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise PackerInputInvalid(
                f"the model has {len(inputs)} inputs {names}, a pack needs one "
                "float tensor of all features (export from a numpy array, e.g. "
                "to_onnx(clf, X.to_numpy()), not from a DataFrame); or pass "
                "--input-name"
            )
        return inputs[0]
    found = [i for i in inputs if i.name == input_name]
    if not found:
        raise PackerInputInvalid(
            f"the model has no input {input_name!r}; inputs: {[i.name for i in inputs]}"
        )
    return found[0]


def _label_values(column: pd.Series) -> pd.Series:
    """Labels as strings; integral numbers without a trailing `.0`."""
    if pd.api.types.is_float_dtype(column) and (column.dropna() % 1 == 0).all():
        column = column.astype("Int64")
    return column.astype(str)


def _choose_labels(
    given: list[str] | None, model_labels: list[str] | None, values: pd.Series
) -> list[str]:
    present = sorted(set(values))
    if given is None:
        if model_labels is not None:
            if not set(present) <= set(model_labels):
                raise PackerInputInvalid(
                    f"the model lists its classes as {','.join(model_labels)} but "
                    f"the label column holds {_few(present)}: pass --labels with "
                    "the label column's values in the model's output order (the "
                    "packer checks the order against the data)"
                )
            return model_labels
        if all(v.lstrip("-").isdigit() for v in present):
            return sorted(present, key=int)
        return present
    if len(set(given)) != len(given):
        raise PackerInputInvalid(f"--labels names a label twice: {given}")
    unknown = sorted(set(present) - set(given))
    if unknown:
        raise PackerInputInvalid(
            f"the label column holds {_few(unknown)}, which --labels does not name; "
            "--labels must list the values of the label column in the model's "
            f"output order ({_order_hint(model_labels, present)}); to serve other "
            "names, write them into the label column"
        )
    if model_labels is not None:
        if len(model_labels) != len(given):
            raise PackerInputInvalid(
                f"the model has {len(model_labels)} classes ({','.join(model_labels)})"
                f" but --labels names {len(given)}"
            )
        if set(model_labels) == set(given) and model_labels != given:
            raise PackerInputInvalid(
                f"the model lists its classes as {','.join(model_labels)}, --labels "
                f"says {','.join(given)}: pass --labels {','.join(model_labels)}"
            )
    return given


def _order_hint(model_labels: list[str] | None, present: list[str]) -> str:
    if model_labels is not None:
        return f"the model lists {','.join(model_labels)}"
    return f"the label column holds {_few(present)}"


def _few(values: list[str], limit: int = 5) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _features(frame: pd.DataFrame, features: list[str] | None, width: int | None):  # type: ignore[no-untyped-def]
    if features is not None:
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise PackerInputInvalid(f"the data has no columns {missing}")
        names = features
    else:
        names = [c for c in frame.columns if c != LABEL_COLUMN]
    text = [c for c in names if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise PackerInputInvalid(
            f"columns {text} are not numeric; list the model's inputs with --features"
        )
    if width is not None and width != len(names):
        raise PackerInputInvalid(
            f"the model takes {width} features per row but the data has "
            f"{len(names)} columns besides the label; list them with --features"
        )
    empty = {c: int(n) for c, n in frame[names].isna().sum().items() if n}
    if empty:
        raise PackerInputInvalid(
            f"the data has missing values (column: rows) {empty}; drop or fill them"
        )
    return names


def _check_probabilities(
    found: ProbabilityOutput, x: np.ndarray, in_name: str, logits: bool
) -> None:
    from packs.loader import _import_onnxruntime

    ort = _import_onnxruntime()
    try:
        session = ort.InferenceSession(
            found.model_bytes, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime's errors carry the reason in line one
        reason = str(exc).splitlines()[0].split(" : ")[-1]
        raise PackerInputInvalid(
            f"onnxruntime cannot load the model: {reason}"
        ) from None
    try:
        (probs,) = session.run([found.raw_output_name], {in_name: x})
    except Exception as exc:  # onnxruntime's errors carry the reason in line one
        raise PackerInputInvalid(
            f"the model fails on the data's rows: {str(exc).splitlines()[0]}"
        ) from None
    probs = np.asarray(probs, dtype=np.float64)
    sums = probs.sum(axis=1)
    distributions = bool(
        (probs >= -1e-6).all() and (np.abs(sums - 1) < _SUM_TOLERANCE).all()
    )
    if logits and distributions:
        raise PackerInputInvalid(
            f"output {found.raw_output_name!r} already holds probabilities (rows "
            "sum to 1); drop --logits"
        )
    if not logits and not distributions:
        raise PackerInputInvalid(
            f"output {found.raw_output_name!r} does not hold probabilities (row sums "
            f"{sums.min():.3g} to {sums.max():.3g}, lowest value {probs.min():.3g});"
            " if it holds logits pass --logits"
        )


def pack_onnx(
    model_path: Path,
    data_path: Path,
    out_dir: Path,
    *,
    name: str,
    labels: list[str] | None = None,
    label_column: str = LABEL_COLUMN,
    features: list[str] | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
    logits: bool = False,
    validation_path: Path | None = None,
    test_path: Path | None = None,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    echo: Callable[[str], object] = lambda line: None,
) -> PackMetadata:
    """Write a pack for `model_path`; features default to every non-label column,
    labels to the model's own class list (or the sorted label values)."""
    if (validation_path is None) != (test_path is None):
        raise PackerInputInvalid("pass both --validation and --test, or neither")
    echo(f"reading {model_path}")
    model = _load_model(model_path)
    model_input = _model_input(model, input_name)
    elem = model_input.type.tensor_type
    if elem.elem_type not in (1, 11):
        raise PackerInputInvalid(
            f"input {model_input.name!r} must be a float or double tensor"
        )
    found = probability_output(model, output_name=output_name, logits=logits)
    echo(f"probabilities: {found.source}")
    dims = [int(d.dim_value) for d in elem.shape.dim][1:]  # 0: not fixed
    tensor_shape = dims if len(dims) > 1 and all(dims) else None
    width = int(np.prod(dims)) if dims and all(dims) else None

    echo(f"reading {data_path}")
    frames = {"sample": read_frame(data_path)}
    if validation_path is not None and test_path is not None:
        frames["validation"] = read_frame(validation_path)
        frames["test"] = read_frame(test_path)
    for part, frame in frames.items():
        if label_column not in frame.columns:
            raise PackerInputInvalid(
                f"the {part} data has no label column {label_column!r}; columns: "
                f"{_few([str(c) for c in frame.columns])}; pass --label-column"
            )
        frame.rename(columns={label_column: LABEL_COLUMN}, inplace=True)
        frame[LABEL_COLUMN] = _label_values(frame[LABEL_COLUMN])
    sample = frames["sample"]
    names = _features(sample, features, width)
    for part in ("validation", "test"):
        if part in frames:
            _features(frames[part], names, width)
    labels = _choose_labels(labels, found.model_labels, sample[LABEL_COLUMN])
    dtype = "float64" if elem.elem_type == 11 else "float32"
    probe = sample[names].head(_PROBE_ROWS).to_numpy(dtype=dtype)
    if tensor_shape is not None:
        probe = probe.reshape((len(probe), *tensor_shape))
    _check_probabilities(found, probe, model_input.name, logits)

    splits: Splits
    if validation_path is not None and test_path is not None:
        splits = given_splits(
            sample,
            frames["validation"],
            frames["test"],
            files={
                "fit": Path(data_path).name,
                "validation": Path(validation_path).name,
                "test": Path(test_path).name,
            },
        )
    else:
        echo(f"splitting the sample by label (seed {seed})")
        splits = split_frame(
            sample,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
    echo(
        f"parts: fit {len(splits.train)}, validation {len(splits.validation)}, "
        f"test {len(splits.test)} rows"
    )
    return write_pack(
        Path(out_dir),
        model_bytes=found.model_bytes,
        name=name,
        description=f"Packed from {Path(model_path).name} with {Path(data_path).name}.",
        features=[FeatureSpec(name=str(n)) for n in names],
        labels=labels,
        onnx_input=model_input.name,
        onnx_output=found.output_name,
        output_source=found.source,
        splits=splits,
        dtype=dtype,
        tensor_shape=tensor_shape,
        check_labels=True,
        echo=echo,
    )
