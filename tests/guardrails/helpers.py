"""Builders shared by the guardrail tests: a small synthetic pack description,
policies from dicts, hypothesis strategies for probability rows, and the
deterministic hypothesis settings every property test uses (stable CI)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from guardrails.policy import Policy
from packs.format import (
    FeatureBounds,
    FeatureSpec,
    InputSpec,
    OutputSpec,
    PackMetadata,
    TemperatureFit,
)

LABELS = ["cat", "dog", "fox"]
FEATURES = ["x0", "x1"]
TRAIN_PRIORS = {"cat": 0.5, "dog": 0.3, "fox": 0.2}

PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)


def make_meta(temperature: float = 1.0, validation_rows: int = 100) -> PackMetadata:
    return PackMetadata(
        name="synthetic",
        version="test-1",
        input=InputSpec(
            onnx_name="x", features=[FeatureSpec(name=f) for f in FEATURES]
        ),
        output=OutputSpec(onnx_name="p", labels=LABELS),
        training_priors=TRAIN_PRIORS,
        feature_bounds={
            "x0": FeatureBounds(min=0.0, max=10.0),
            "x1": FeatureBounds(min=-1.0, max=1.0),
        },
        temperature=TemperatureFit(
            temperature=temperature, validation_rows=validation_rows, fitted=True
        ),
    )


def make_policy(**sections: Any) -> Policy:
    """A policy with defaults except the given sections (plain dicts)."""
    return Policy.model_validate({"version": "test", **sections})


def fixed(probabilities: np.ndarray):  # type: ignore[no-untyped-def]
    """A predict_proba that ignores the features and returns these rows."""
    return lambda features: probabilities


def inside(n: int) -> np.ndarray:
    """n distinct rows of features well inside the synthetic bounds (distinct, as
    the posteriors a test pairs them with come from different inputs)."""
    rows = np.tile(np.array([[5.0, 0.0]], dtype=np.float32), (n, 1))
    rows[:, 0] += np.linspace(0.0, 1.0, n, dtype=np.float32)
    return rows


@st.composite
def probability_rows(draw: st.DrawFn, k: int = 3, max_rows: int = 20) -> np.ndarray:
    """(n, k) rows of probabilities, including exact zeros and near-ties."""
    n = draw(st.integers(1, max_rows))
    weights = draw(
        arrays(
            np.float64,
            (n, k),
            elements=st.one_of(
                st.just(0.0), st.floats(1e-9, 1.0), st.sampled_from([0.5, 1.0])
            ),
        )
    )
    weights[:, 0] += (weights.sum(axis=1) == 0).astype(float)  # no all-zero row
    return weights / weights.sum(axis=1, keepdims=True)


def priors_dict(draw: st.DrawFn, allow_zero: bool = True) -> dict[str, float]:
    low = 0.0 if allow_zero else 1e-3
    values = draw(st.lists(st.floats(low, 1.0), min_size=3, max_size=3))
    if sum(values) == 0:
        values[0] = 1.0
    return dict(zip(LABELS, values, strict=True))
