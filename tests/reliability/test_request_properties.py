"""Properties of the request models: whatever JSON arrives, /predict's decoding ends
in a finite (n, 4) float32 array or in a `ServiceError` below 500, never in another
exception (which the service would answer with a 500)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from common.errors import ServiceError
from feedback.schemas import ReportCreate
from service.decode import decode_features
from service.schemas import PredictRequest
from tests.reliability.helpers import FEATURES

MAX_ROWS = 50
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e39, max_value=1e39),  # around float32's range
    st.integers(min_value=-(10**40), max_value=10**40),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)
# Mostly the real feature names, sometimes others, so both the fast path and every
# refusal are reached.
names = st.one_of(st.sampled_from(FEATURES), st.text(max_size=6))
rows = st.one_of(
    st.dictionaries(names, numbers, max_size=6),
    st.lists(numbers, max_size=6),
    json_values,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "instances": st.one_of(st.lists(rows, max_size=MAX_ROWS + 3), json_values),
        "columns": st.one_of(
            st.dictionaries(names, st.lists(numbers, max_size=4), max_size=6),
            json_values,
        ),
        "context": st.one_of(st.text(max_size=8), json_values),
        "priors": st.one_of(st.dictionaries(st.text(max_size=6), numbers), json_values),
        "extra": json_values,
    },
)


def _decode_or_refuse(body: Any) -> np.ndarray | None:
    """What /predict does with a parsed body: validate, then decode."""
    try:
        request = PredictRequest.model_validate(body)
    except ValidationError:
        return None  # answered 422 by http_errors.validation_response
    try:
        return decode_features(request, FEATURES, max_rows=MAX_ROWS)
    except ServiceError as exc:
        assert 400 <= exc.status_code < 500, exc
        assert exc.message
        return None


@PROPERTY
@given(body=bodies)
def test_any_body_decodes_to_finite_rows_or_is_refused_with_a_4xx(body: Any) -> None:
    x = _decode_or_refuse(body)
    if x is not None:
        assert x.dtype == np.float32
        assert x.ndim == 2 and x.shape[1] == len(FEATURES)
        assert 1 <= x.shape[0] <= MAX_ROWS
        assert np.isfinite(x).all()


@PROPERTY
@given(body=bodies)
def test_json_text_with_nan_literals_is_refused_not_crashed(body: Any) -> None:
    # The service parses raw bytes; Python's json writes NaN/Infinity literals,
    # which are not JSON and must end as a 4xx too.
    text = json.dumps(body, allow_nan=True)
    try:
        request = PredictRequest.model_validate_json(text)
    except ValidationError:
        return
    try:
        x = decode_features(request, FEATURES, max_rows=MAX_ROWS)
    except ServiceError as exc:
        assert exc.status_code < 500
        return
    assert np.isfinite(x).all()


finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
row_values = st.lists(
    st.lists(finite32, min_size=len(FEATURES), max_size=len(FEATURES)),
    min_size=1,
    max_size=MAX_ROWS,
)


@PROPERTY
@given(values=row_values, order=st.permutations(FEATURES))
def test_objects_lists_and_columns_decode_to_the_same_array(
    values: list[list[float]], order: list[str]
) -> None:
    objects = [{name: row[FEATURES.index(name)] for name in order} for row in values]
    columns = {name: [row[FEATURES.index(name)] for row in values] for name in order}
    decoded = [
        decode_features(PredictRequest(**form), FEATURES, max_rows=MAX_ROWS)  # type: ignore[arg-type]
        for form in (
            {"instances": objects},
            {"instances": values},
            {"columns": columns},
        )
    ]
    expected = np.asarray(values, dtype=np.float32)
    for x in decoded:
        np.testing.assert_array_equal(x, expected)


@PROPERTY
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "prediction_id": json_values,
            "inputs": st.one_of(st.dictionaries(names, numbers), json_values),
            "bad_output": json_values,
            "expected_label": json_values,
            "categories": st.one_of(st.lists(st.text(max_size=8)), json_values),
            "comment": json_values,
        },
    )
)
def test_report_bodies_validate_or_fail_with_a_validation_error(body: Any) -> None:
    try:
        report = ReportCreate.model_validate(body)
    except ValidationError:
        return
    if report.inputs is not None:
        assert all(math.isfinite(v) for v in report.inputs.values())
    assert (report.prediction_id is None) != (report.bad_output is None)


@pytest.mark.parametrize("width", [0, 3, 5])
def test_list_rows_of_the_wrong_width_are_a_422_naming_the_row(width: int) -> None:
    request = PredictRequest(instances=[[1.0] * 4, [1.0] * width])
    with pytest.raises(ServiceError) as info:
        decode_features(request, FEATURES, max_rows=MAX_ROWS)
    assert info.value.status_code == 422
    assert info.value.field == "instances.1"
