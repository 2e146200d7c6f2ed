"""Request and response bodies of the HTTP API (they also generate the OpenAPI schema).

An instance is either an object of named features (`{"bill_length_mm": 39.1, ...}`)
or a list of numbers in the pack's feature order. The column form
(`{"columns": {"bill_length_mm": [39.1, ...], ...}}`) skips per-row objects for
large batches.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Body):
    instances: list[dict[str, FiniteFloat] | list[FiniteFloat]] | None = Field(
        None,
        description="Rows to classify: objects of named features, or lists in "
        "feature order.",
        examples=[
            [
                {
                    "bill_length_mm": 39.1,
                    "bill_depth_mm": 18.7,
                    "flipper_length_mm": 181,
                    "body_mass_g": 3750,
                }
            ]
        ],
    )
    columns: dict[str, list[FiniteFloat]] | None = Field(
        None, description="Column form: one equally long list per feature."
    )
    context: str | None = Field(
        None,
        description="Named deployment context (e.g. an island) whose priors apply.",
        examples=["Dream"],
        max_length=200,
    )
    priors: dict[str, FiniteFloat] | None = Field(
        None, description="Explicit deployment class priors; override `context`."
    )
    format: Literal["rows", "columns"] | None = Field(
        None,
        description="Answer with one object per row (`rows`, as PredictResponse) "
        "or one list per field (`columns`, as ColumnsPredictResponse). Default: "
        "the form of the request (`instances` -> rows, `columns` -> columns).",
    )

    @property
    def answers_in_columns(self) -> bool:
        if self.format is None:
            return self.columns is not None
        return self.format == "columns"


class Prediction(BaseModel):
    prediction_id: str
    label: str | None = Field(description="The answer; null when abstained.")
    abstained: bool
    reason: str | None = Field(description="Why the guardrails abstained.")
    probabilities: dict[str, float]
    prediction_set: list[str] | None = Field(
        None,
        description="Labels that hold the true one with probability >= 1 - alpha "
        "(conformal, see the policy's `conformal` section); null when it is off.",
    )
    model_version: str
    policy_version: str
    trace: list[dict[str, Any]] = Field(
        description="What each guardrail stage did, in order."
    )


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class PredictionColumns(BaseModel):
    prediction_id: list[str]
    label: list[str | None] = Field(description="null where abstained.")
    abstained: list[bool]
    reason: list[str | None]
    probabilities: dict[str, list[float]] = Field(
        description="One list per label, aligned with the other columns."
    )
    prediction_set: list[list[str]] | None = Field(
        None, description="Each row's conformal prediction set; null when off."
    )


class StageTrace(BaseModel):
    stage: str
    entry: dict[str, Any] = Field(
        description="What the stage did on every row not listed in `rows`."
    )
    rows: list[int] = Field(description="Rows the stage treated on their own.")
    entries: list[dict[str, Any]] = Field(description="One per listed row.")


class ColumnsPredictResponse(BaseModel):
    """The column form of an answer: no per-row objects, for large batches."""

    model_version: str
    policy_version: str
    columns: PredictionColumns
    trace: list[StageTrace] = Field(description="One per guardrail stage, in order.")


class InfoResponse(BaseModel):
    model_name: str
    model_version: str
    policy_version: str
    labels: list[str]
    features: list[dict[str, Any]]
    provider: str
    guardrail_stages: list[str]
    contexts: list[str]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None
    errors: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
