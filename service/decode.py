"""Turn validated request instances into the (n, d) float32 array the model expects.

Unknown or missing features are refused here, before the model, with a message
naming them (onnxruntime would otherwise turn a wrong width into a 500).
"""

from __future__ import annotations

import operator

import numpy as np

from common.errors import BadRequest, PayloadTooLarge, Unprocessable
from service.schemas import PredictRequest


def decode_features(
    request: PredictRequest, feature_names: list[str], *, max_rows: int
) -> np.ndarray:
    x = _decode(request, feature_names, max_rows)
    if not np.isfinite(x).all():
        row, col = np.argwhere(~np.isfinite(x))[0]
        raise Unprocessable(
            f"row {row} feature {feature_names[col]} is too large for float32",
            field=feature_names[col],
        )
    return x


def _decode(
    request: PredictRequest, feature_names: list[str], max_rows: int
) -> np.ndarray:
    if (request.instances is None) == (request.columns is None):
        raise BadRequest(
            "send exactly one of `instances` (rows) or `columns`", field="instances"
        )
    if request.columns is not None:
        return _from_columns(request.columns, feature_names, max_rows)
    instances = request.instances or []
    if not instances:
        raise Unprocessable(
            "`instances` is empty: send 1 or more rows", field="instances"
        )
    if len(instances) > max_rows:
        raise PayloadTooLarge(
            f"{len(instances)} instances exceed the limit of {max_rows} per request",
            field="instances",
        )
    width = len(feature_names)
    first = instances[0]
    if isinstance(first, dict) and all(
        isinstance(row, dict) and len(row) == width for row in instances
    ):
        try:
            # Fast path: every row has the right number of keys, all known.
            if width > 1:
                rows = list(map(operator.itemgetter(*feature_names), instances))
            else:
                rows = [[row[feature_names[0]]] for row in instances]  # type: ignore[call-overload]
            return np.asarray(rows, dtype=np.float32)
        except KeyError:
            pass
    out = np.empty((len(instances), width), dtype=np.float32)
    for i, row in enumerate(instances):
        out[i] = _one_row(row, feature_names, i)
    return out


def _one_row(
    row: dict[str, float] | list[float], names: list[str], i: int
) -> list[float]:
    if isinstance(row, list):
        if len(row) != len(names):
            raise Unprocessable(
                f"instances[{i}] has {len(row)} values; expected {len(names)} "
                f"in the order {names}",
                field=f"instances.{i}",
            )
        return row
    unknown = sorted(set(row) - set(names))
    if unknown:
        raise Unprocessable(
            f"instances[{i}] has unknown features {unknown}; allowed: {names}",
            field=f"instances.{i}.{unknown[0]}",
        )
    missing = [n for n in names if n not in row]
    raise Unprocessable(
        f"instances[{i}] is missing features {missing}",
        field=f"instances.{i}.{missing[0]}",
    )


def _from_columns(
    columns: dict[str, list[float]], names: list[str], max_rows: int
) -> np.ndarray:
    unknown = sorted(set(columns) - set(names))
    if unknown:
        raise Unprocessable(
            f"columns has unknown features {unknown}; allowed: {names}",
            field=f"columns.{unknown[0]}",
        )
    missing = [n for n in names if n not in columns]
    if missing:
        raise Unprocessable(
            f"columns is missing features {missing}", field=f"columns.{missing[0]}"
        )
    lengths = {len(columns[n]) for n in names}
    if len(lengths) != 1:
        raise Unprocessable("columns must all have the same length", field="columns")
    (n,) = lengths
    if n == 0:
        raise Unprocessable("columns are empty: send 1 or more rows", field="columns")
    if n > max_rows:
        raise PayloadTooLarge(
            f"{n} rows exceed the limit of {max_rows} per request", field="columns"
        )
    return np.column_stack(
        [np.asarray(columns[name], dtype=np.float32) for name in names]
    )
