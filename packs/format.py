"""The model-pack format, version 1: what a pack directory holds and its metadata.

A pack is a directory:

    model.onnx        an ONNX classifier: one float input, one (n, k) probability output
    metadata.json     `PackMetadata` below, validated on load
    reference.parquet a sample of training inputs (+ `label`) for drift detection
    test.parquet      the held-out test set (+ `label`) used by the regression gate
    policy.yaml       the pack's own guardrail policy, written for its labels
    calibration.parquet  validation-split probabilities + `label`, for conformal
                      sets (`packs.calibration_scores`; optional)
    validation.parquet  optional: the held-out validation split (+ `label`), the
                      "train-dev" set of the error analysis

Probabilities must be the model's output for the labels in `output.labels`, in that
order. Everything the guardrails need (priors, bounds, temperature) is here, so any
ONNX classifier with this metadata is served unchanged.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION: Literal[1] = 1
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
REFERENCE_FILE = "reference.parquet"
TEST_FILE = "test.parquet"
POLICY_FILE = "policy.yaml"
VALIDATION_FILE = "validation.parquet"
LABEL_COLUMN = "label"
#: Model probabilities down to minus this are float rounding (skl2onnx's tree
#: ensembles answer -1e-8 for a class no leaf row had) and are read as 0.
PROBABILITY_ROUNDING = 1e-6


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    name: str = Field(min_length=1)
    """Feature name as clients send it (e.g. `bill_length_mm`)."""
    unit: str | None = None
    """Unit of measure, for people (e.g. `mm`, `g`)."""


class InputSpec(_Strict):
    onnx_name: str
    """Name of the ONNX graph input."""
    dtype: Literal["float32", "float64"] = "float32"
    """Element type the ONNX input expects."""
    features: list[FeatureSpec] = Field(min_length=1)
    """Features in the column order the model expects."""
    tensor_shape: list[int] | None = None
    """If set, each row is reshaped to this per-row shape (e.g. [8, 8]) before
    inference; clients still send a flat list in feature order."""

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        if self.tensor_shape is not None and math.prod(self.tensor_shape) != len(names):
            raise ValueError("tensor_shape does not hold exactly the listed features")
        return self


class OutputSpec(_Strict):
    onnx_name: str
    """Name of the ONNX output holding class probabilities, shape (n, len(labels))."""
    labels: list[str] = Field(min_length=2)
    """Class labels in output column order."""
    source: str | None = None
    """How the packer found this output in the exported model (e.g. a ZipMap
    unwrapped to its tensor, a softmax appended to logits)."""

    @model_validator(mode="after")
    def _unique(self) -> OutputSpec:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        return self


class FeatureBounds(_Strict):
    min: float
    max: float
    quantiles: dict[str, float] = Field(default_factory=dict)
    """Training quantiles keyed by level as a string (`"0.01"`, `"0.5"`, `"0.99"`)."""

    @model_validator(mode="after")
    def _ordered(self) -> FeatureBounds:
        if not self.min <= self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class TemperatureFit(_Strict):
    temperature: float = Field(gt=0)
    """Divide log-probabilities by this before renormalising; 1.0 is identity."""
    validation_rows: int = Field(ge=0)
    """Rows the temperature was fitted on."""
    fitted: bool
    """False when the validation set was too small and 1.0 was kept."""
    bounds: tuple[float, float] = (0.5, 5.0)
    """The temperature was constrained to this range."""
    reason: str | None = None
    """Why no temperature was fitted, when `fitted` is false."""


class ReferenceInfo(_Strict):
    """What the drift reference (`reference.parquet`) holds."""

    splits: list[str]
    """The data splits its rows come from (e.g. `train`, `validation`)."""
    rows: int = Field(ge=0)
    """Rows in the reference table."""
    distinct_rows: int = Field(ge=0)
    """Distinct feature rows: the evidence a drift test can weigh."""


class SplitSpec(_Strict):
    method: Literal["stratified", "files", "builder"]
    """`stratified`: the packer split one sample by label with `seed`; `files`:
    validation and test rows came from their own files; `builder`: a pack builder
    chose the parts (the default penguin pack)."""
    seed: int | None = None
    validation_fraction: float | None = None
    test_fraction: float | None = None
    files: dict[str, str] = Field(default_factory=dict)
    """File names per part, when the parts came from files."""
    rows: dict[str, int] = Field(default_factory=dict)
    """Rows per part: `fit` (priors; with validation, the drift reference),
    `validation` (temperature), `test` (metrics, the gate), `bounds` (the
    training sample bounds come from)."""


class PackMetadata(_Strict):
    format_version: Literal[1] = FORMAT_VERSION
    name: str
    version: str
    """Pack version; the default builder derives it from the model's content hash."""
    task: Literal["classification"] = "classification"
    description: str = ""
    input: InputSpec
    output: OutputSpec
    training_priors: dict[str, float]
    """Class frequencies in the training data, one per label, summing to 1."""
    feature_bounds: dict[str, FeatureBounds]
    """Training range per feature, one entry per input feature."""
    temperature: TemperatureFit
    metrics: dict[str, float] = Field(default_factory=dict)
    """Held-out metrics (e.g. `test_accuracy`, `test_log_loss`)."""
    context_column: str | None = None
    """Column of the test and reference tables naming each row's deployment
    context (the penguin pack: `island`), used to replay rows in context."""
    reference: ReferenceInfo | None = None
    """The drift reference's make-up; None in packs written before it was kept."""
    split: SplitSpec | None = None
    """Which rows were used for what; None in packs written before it was kept."""
    constant_features: list[str] = Field(default_factory=list)
    """Features with a single value in the whole training sample: they carry no
    range, so the input-bounds stage leaves them unchecked."""

    @property
    def labels(self) -> list[str]:
        return self.output.labels

    @property
    def feature_names(self) -> list[str]:
        return self.input.names

    @model_validator(mode="after")
    def _consistent(self) -> PackMetadata:
        labels = set(self.output.labels)
        if set(self.training_priors) != labels:
            raise ValueError("training_priors must have exactly one entry per label")
        total = sum(self.training_priors.values())
        if any(p < 0 for p in self.training_priors.values()) or abs(total - 1) > 1e-6:
            raise ValueError(f"training_priors must be >= 0 and sum to 1 (sum {total})")
        if set(self.feature_bounds) != set(self.input.names):
            raise ValueError("feature_bounds must have exactly one entry per feature")
        return self
