"""Pydantic models the HTTP layer accepts and returns for reports and predictions.

ORM rows (`feedback.models`) never leave the store: the service turns them into
these with `ReportPublic.from_row`. Label values are checked against the served
model's labels in the store (they depend on the pack, not on the schema).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from feedback.models import Report

ReportStatus = Literal["new", "confirmed", "rejected", "fixed"]
Label = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]
Category = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, min_length=1, max_length=64
    ),
]
FeatureValue = Annotated[float, Field(allow_inf_nan=False)]
MAX_CATEGORIES = 20
MAX_FEATURES = 4096


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _unique_categories(values: list[str]) -> list[str]:
    # Tags are free text; the same tag twice is noise, and order means nothing.
    return sorted(set(values))


class OutputRecord(_Model):
    """What the service answered for one row."""

    label: str | None = Field(default=None, max_length=200)
    """Returned label; null when the guardrails abstained."""
    abstained: bool = False
    """True when the service refused to answer for this row."""
    reason: str | None = Field(default=None, max_length=1000)
    """Why it abstained (guardrail name and detail), if it did."""
    probabilities: dict[str, float] | None = Field(default=None, max_length=1000)
    """Final probabilities per label, after guardrails."""


class ReportCreate(_Model):
    """A bad-result report: a prediction id, or the input and the bad output."""

    prediction_id: str | None = Field(default=None, min_length=1, max_length=64)
    """Id of the logged prediction; the stored input and output are attached."""
    inputs: dict[str, FeatureValue] | None = Field(
        default=None, max_length=MAX_FEATURES
    )
    """Feature values by name, when there is no prediction id."""
    bad_output: OutputRecord | None = None
    """The answer that was wrong, when there is no prediction id."""
    context: str | None = Field(default=None, max_length=200)
    """Deployment context of the input, when there is no prediction id."""
    model_version: str | None = Field(default=None, max_length=200)
    """Model version that gave the bad answer, if known (else the served one)."""
    expected_label: Label | None = None
    """What the answer should have been; must be one of the model's labels."""
    categories: list[Category] = Field(default_factory=list, max_length=MAX_CATEGORIES)
    """Free tags such as "blurry" or "wrong context" (lower-cased, deduplicated)."""
    comment: str | None = Field(default=None, max_length=4000)
    reporter: str | None = Field(default=None, max_length=200)

    _unique = field_validator("categories")(_unique_categories)

    @model_validator(mode="after")
    def _one_source(self) -> ReportCreate:
        direct = (self.inputs, self.bad_output, self.context, self.model_version)
        if self.prediction_id is not None:
            if any(v is not None for v in direct):
                raise ValueError(
                    "give either prediction_id, or inputs and bad_output (with "
                    "optional context and model_version), not both: the logged "
                    "prediction already holds them"
                )
        elif self.inputs is None or self.bad_output is None:
            raise ValueError("give prediction_id, or both inputs and bad_output")
        elif not self.inputs:
            raise ValueError("inputs must hold at least one feature value")
        return self


class ReportUpdate(_Model):
    """A triage change; fields left out stay as they are."""

    status: ReportStatus | None = None
    categories: list[Category] | None = Field(default=None, max_length=MAX_CATEGORIES)
    """Replaces the report's categories."""
    corrected_label: Label | None = None
    """The right answer as decided by triage; must be one of the model's labels."""

    _unique = field_validator("categories")(
        lambda v: None if v is None else _unique_categories(v)
    )

    @model_validator(mode="after")
    def _not_empty(self) -> ReportUpdate:
        if not self.model_fields_set:
            raise ValueError("give at least one of status, categories, corrected_label")
        return self


class ReportFilter(BaseModel):
    """Triage list filters; all given ones must match."""

    # Used as a FastAPI query model next to `limit` / `offset`: FastAPI hands a
    # query model every query parameter, so extra ones must be ignored, not refused.
    model_config = ConfigDict(extra="ignore")

    status: ReportStatus | None = None
    category: Category | None = None
    label: Label | None = None
    """Matches the predicted, expected or corrected label."""
    predicted_label: Label | None = None
    """The label the service answered."""
    expected_label: Label | None = None
    """The right label as known: triage's correction, else the reporter's."""
    model_version: str | None = Field(default=None, max_length=200)
    created_after: datetime | None = None
    created_before: datetime | None = None

    @field_validator("created_after", "created_before")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class ReportPublic(_Model):
    """A stored report as the API returns it."""

    id: str
    status: ReportStatus
    created_at: datetime
    updated_at: datetime
    prediction_id: str | None
    model_version: str | None
    policy_version: str | None
    context: str | None
    inputs: dict[str, float | None] | None
    bad_output: dict[str, Any] | None
    """Null in an answer to a non-admin caller who sent a prediction id."""
    expected_label: str | None
    corrected_label: str | None
    categories: list[str]
    comment: str | None
    reporter: str | None
    regression_case_id: int | None
    """Set once triage confirmed the report and it became a regression case."""

    @classmethod
    def from_row(cls, row: Report) -> ReportPublic:
        return cls(
            id=row.id,
            status=row.status,  # type: ignore[arg-type]
            created_at=row.created_at,
            updated_at=row.updated_at,
            prediction_id=row.prediction_id,
            model_version=row.model_version,
            policy_version=row.policy_version,
            context=row.context,
            inputs=_clean_inputs(row.inputs),
            bad_output=row.bad_output,
            expected_label=row.expected_label,
            corrected_label=row.corrected_label,
            categories=list(row.categories or []),
            comment=row.comment,
            reporter=row.reporter,
            regression_case_id=row.regression_case_id,
        )

    def echo_of(self, sent: ReportCreate) -> ReportPublic:
        """This report as its (non-admin) sender may see it: what they sent and
        the report's id and status, nothing the store attached or triage decided.

        A report by prediction id otherwise hands the logged prediction's inputs
        to anyone who knows (or replays) the id; `/admin/predictions` guards them.
        """
        by_id = sent.prediction_id is not None
        return self.model_copy(
            update={
                "inputs": None if by_id else self.inputs,
                "bad_output": None if by_id else self.bad_output,
                "context": None if by_id else self.context,
                "model_version": None if by_id else self.model_version,
                "policy_version": None if by_id else self.policy_version,
                "corrected_label": None,
                "regression_case_id": None,
            }
        )


def _clean_inputs(inputs: dict[str, Any] | None) -> dict[str, float | None] | None:
    if inputs is None:
        return None
    return {
        k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v))
        for k, v in inputs.items()
    }
