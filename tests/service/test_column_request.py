"""The column form parsed straight into numpy: the same request as pydantic's
parse, and a 422 naming the column and value for anything that is not a number."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from common.errors import Unprocessable
from service.column_request import parse_column_request
from service.schemas import PredictRequest

COLUMNS = {"bill_length_mm": [39.1, 45], "body_mass_g": [3750, 4100.5]}


def test_columns_become_arrays_and_the_other_fields_are_validated() -> None:
    body = orjson.dumps({"columns": COLUMNS, "context": "Dream", "format": "rows"})
    request = parse_column_request(body)
    assert request is not None
    expected = PredictRequest.model_validate_json(body)
    assert (request.context, request.format, request.answers_in_columns) == (
        expected.context, expected.format, expected.answers_in_columns,
    )  # fmt: skip
    assert request.columns is not None and expected.columns is not None
    for name, values in expected.columns.items():
        column = request.columns[name]
        assert isinstance(column, np.ndarray) and column.tolist() == values


@pytest.mark.parametrize(
    "body",
    [b'{"instances": [[1, 2, 3, 4]]}', b"{not json", b"[1, 2]", b'{"columns": 3}'],
)
def test_other_bodies_are_left_to_the_usual_parse(body: bytes) -> None:
    assert parse_column_request(body) is None


@pytest.mark.parametrize(
    ("values", "message", "field"),
    [
        ([1, "x"], r"columns.a\[1\] is a string", "columns.a.1"),
        ([1, [2]], r"columns.a\[1\] is a list", "columns.a.1"),
        ([1, {"v": 2}], r"columns.a\[1\] is an object", "columns.a.1"),
        ([None, 2], r"columns.a\[0\] is not a finite number", "columns.a.0"),
        (5, "columns.a must be a list of numbers, not int", "columns.a"),
    ],
)
def test_a_bad_value_is_a_422_naming_column_and_position(
    values: object, message: str, field: str
) -> None:
    with pytest.raises(Unprocessable, match=message) as err:
        parse_column_request(orjson.dumps({"columns": {"a": values}}))
    assert err.value.field == field and err.value.status_code == 422


def test_bad_other_fields_fail_as_pydantic_says() -> None:
    with pytest.raises(ValidationError, match="context"):
        parse_column_request(orjson.dumps({"columns": COLUMNS, "context": 5}))
