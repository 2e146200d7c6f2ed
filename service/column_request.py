"""The column form of /predict parsed straight into numpy, without pydantic floats.

`{"columns": {feature: [v, ...]}}` is the form for large batches; validating it
as `list[FiniteFloat]` built and checked one Python float per value. Here the
body is parsed once (orjson) and every column becomes one float64 array; the
other fields (context, priors, format) still go through `PredictRequest`, so
they are checked exactly as in the row form. Errors name the column and the
first bad value (422), as pydantic's would; malformed JSON is left to the
caller's usual path (400). As in pydantic's lax mode, numeric strings and booleans
are taken as numbers; null is refused as not finite.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from common.errors import Unprocessable
from service.schemas import PredictRequest


def parse_column_request(body: bytes) -> PredictRequest | None:
    """The request of a column-form body, or None when the body is not one (or
    is not valid JSON): the caller then validates it as usual."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("columns"), dict):
        return None
    arrays = {name: _column(name, values) for name, values in doc["columns"].items()}
    rest = {k: v for k, v in doc.items() if k != "columns"}
    request = PredictRequest.model_validate({**rest, "columns": {}})
    return request.model_copy(update={"columns": arrays})


def _column(name: str, values: Any) -> np.ndarray:
    field = f"columns.{name}"
    if not isinstance(values, list):
        raise Unprocessable(
            f"columns.{name} must be a list of numbers, not {_kind(values)}",
            field=field,
        )
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim != 1:
        i, bad = next(
            (i, v) for i, v in enumerate(values) if not isinstance(v, (int, float))
        )
        raise Unprocessable(
            f"columns.{name}[{i}] is {_kind(bad)}; every value must be a number",
            field=f"{field}.{i}",
        )
    finite = np.isfinite(array)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise Unprocessable(
            f"columns.{name}[{i}] is not a finite number", field=f"{field}.{i}"
        )
    return array


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
