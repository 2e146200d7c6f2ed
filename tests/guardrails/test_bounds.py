"""Input bounds act exactly at the edges, reject or abstain as the policy says,
and say which row, feature, value and range."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardrails.errors import InputOutOfBounds
from guardrails.pipeline import GuardrailPipeline, RequestContext
from packs.format import FeatureBounds, PackMetadata
from tests.guardrails.helpers import PROPERTY, fixed, make_meta, make_policy

PROBS = np.array([[0.7, 0.2, 0.1]])


def _pipeline(**input_bounds: object) -> GuardrailPipeline:
    return GuardrailPipeline(make_policy(input_bounds=input_bounds), make_meta())


def _row(x0: float, x1: float = 0.0, dtype: type = np.float32) -> np.ndarray:
    return np.array([[x0, x1]], dtype=dtype)


def _passes(pipeline: GuardrailPipeline, features: np.ndarray) -> bool:
    try:
        pipeline.run(
            features, fixed(np.tile(PROBS, (len(features), 1))), RequestContext()
        )
    except InputOutOfBounds:
        return False
    return True


@PROPERTY
@given(
    low=st.floats(-1e6, 1e6),
    width=st.floats(0, 1e6),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_explicit_bounds_act_exactly_at_the_edges(low, width, dtype) -> None:
    high = low + width
    pipeline = _pipeline(source="explicit", features={"x0": {"min": low, "max": high}})
    # The bound as the client's value becomes after the cast to the input dtype.
    lo, hi = dtype(low), dtype(high)
    assert _passes(pipeline, _row(lo, dtype=dtype))
    assert _passes(pipeline, _row(hi, dtype=dtype))
    assert not _passes(pipeline, _row(np.nextafter(lo, dtype(-np.inf)), dtype=dtype))
    assert not _passes(pipeline, _row(np.nextafter(hi, dtype(np.inf)), dtype=dtype))


@pytest.mark.parametrize(
    ("value", "passes"),
    [(-1.0, False), (-0.5000001, False), (-0.5, True), (10.5, True), (10.51, False)],
)
def test_training_range_is_widened_by_the_margin(value: float, passes: bool) -> None:
    # x0 trained on [0, 10]; margin 5% of the width = 0.5 on each side.
    pipeline = _pipeline(margin_fraction=0.05)
    assert _passes(pipeline, _row(value, dtype=np.float64)) is passes


def test_a_client_sending_the_training_minimum_passes_after_float32_cast() -> None:
    meta = make_meta()
    bounds = {**meta.feature_bounds, "x0": FeatureBounds(min=32.1, max=59.6)}
    meta = meta.model_copy(update={"feature_bounds": bounds})
    pipeline = GuardrailPipeline(make_policy(input_bounds={"margin_fraction": 0}), meta)
    # The float32 the client's 32.1 becomes is below the float64 bound 32.1;
    # bounds are compared in float32 too, so it still passes.
    assert float(np.float32(32.1)) < 32.1
    assert _passes(pipeline, _row(32.1))
    assert _passes(pipeline, _row(59.6))
    assert not _passes(pipeline, _row(59.61))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_out_of_bounds(bad: float) -> None:
    assert not _passes(_pipeline(), _row(5.0, bad))


def test_open_ends_accept_anything_on_that_side() -> None:
    pipeline = _pipeline(source="explicit", features={"x0": {"min": 0}})
    assert _passes(pipeline, _row(1e30))
    assert _passes(pipeline, _row(5.0, 1e30))  # x1 unbounded in explicit mode
    assert not _passes(pipeline, _row(-1e-30))


def test_rejection_names_row_feature_value_and_range() -> None:
    pipeline = _pipeline(margin_fraction=0.0)
    features = np.array([[5, 0], [5, 0], [12.5, 0], [5, 3]], dtype=np.float32)
    with pytest.raises(InputOutOfBounds) as info:
        pipeline.run(features, fixed(np.tile(PROBS, (4, 1))), RequestContext())
    err = info.value
    assert err.status_code == 422
    assert err.field == "x0"
    assert err.detail["row"] == 2 and err.detail["value"] == 12.5
    assert (err.detail["min"], err.detail["max"]) == (0.0, 10.0)
    assert err.detail["rows_out_of_bounds"] == 2
    assert "row 2: x0 = 12.5 is outside the allowed range [0.0, 10.0]" in err.message


def test_rejection_happens_before_the_model_runs() -> None:
    calls = []

    def model(features: np.ndarray) -> np.ndarray:
        calls.append(len(features))
        return np.tile(PROBS, (len(features), 1))

    with pytest.raises(InputOutOfBounds):
        _pipeline().run(_row(1e9), model, RequestContext())
    assert calls == []


def test_abstain_action_still_predicts_and_flags_only_the_bad_rows() -> None:
    pipeline = _pipeline(margin_fraction=0.0, action="abstain")
    features = np.array([[5, 0], [11, 2], [np.nan, 0]], dtype=np.float32)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    out = pipeline.run(features, fixed(probs), RequestContext())
    assert out.labels == ["cat", None, None]
    assert out.reasons == [None, "out_of_bounds", "out_of_bounds"]
    np.testing.assert_allclose(out.probabilities, probs)  # still shown
    entry = out.traces[1][0]
    assert entry["acted"] and entry["action"] == "abstain"
    assert entry["out_of_bounds"] == [
        {"feature": "x0", "value": 11.0, "min": 0.0, "max": 10.0},
        {"feature": "x1", "value": 2.0, "min": -1.0, "max": 1.0},
    ]
    assert out.traces[2][0]["out_of_bounds"][0]["value"] is None  # NaN
    assert out.traces[0][0] == {"stage": "input_bounds", "acted": False}


def test_disabled_bounds_let_everything_through(meta: PackMetadata) -> None:
    assert _passes(_pipeline(enabled=False), _row(1e9, -1e9))
