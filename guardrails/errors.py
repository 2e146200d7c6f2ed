"""Errors raised by the guardrails; all are 422 except a broken model output.

common.errors.Unprocessable (422)
└── GuardrailError
    ├── PolicyInvalid(problems)          a policy file or object is not valid
    ├── InputOutOfBounds(row, feature, value, low, high, rows_out)
    ├── FeaturesInvalid(shape, names)    not an (n, d) array of the features
    ├── UnknownContext(name, known)
    └── InvalidPriors(problem)
common.errors.ServiceError (500)
└── ModelOutputInvalid(problem)          the model returned no distribution
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.errors import ServiceError, Unprocessable


def _finite(x: float) -> float | None:
    """NaN and ±inf are not JSON; an open bound or a NaN value reads as null."""
    return x if math.isfinite(x) else None


class GuardrailError(Unprocessable):
    code = "guardrail_error"


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong with a policy: where (dotted path, YAML line) and what."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "(root)"
        if self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.message}"


class PolicyInvalid(GuardrailError):
    code = "policy_invalid"

    def __init__(self, problems: list[PolicyProblem]):
        self.problems = problems
        super().__init__(
            "policy is invalid: " + "; ".join(str(p) for p in problems),
            field=problems[0].path if problems else None,
            problems=[
                {"field": p.path, "line": p.line, "message": p.message}
                for p in problems
            ],
        )


class InputOutOfBounds(GuardrailError):
    code = "input_out_of_bounds"

    def __init__(
        self,
        row: int,
        feature: str,
        value: float,
        low: float,
        high: float,
        rows_out: int,
    ):
        super().__init__(
            f"row {row}: {feature} = {value!r} is outside the allowed range "
            f"[{low!r}, {high!r}]"
            + (f" ({rows_out} rows out of bounds in total)" if rows_out > 1 else ""),
            field=feature,
            row=row,
            value=_finite(value),
            min=_finite(low),
            max=_finite(high),
            rows_out_of_bounds=rows_out,
        )


class FeaturesInvalid(GuardrailError):
    code = "features_invalid"

    def __init__(self, shape: tuple[int, ...], names: list[str]):
        super().__init__(
            f"features have shape {shape}; expected (rows, {len(names)}) with "
            f"columns {names}",
            field="features",
        )


class UnknownContext(GuardrailError):
    code = "unknown_context"

    def __init__(self, name: str, known: list[str]):
        super().__init__(
            f"unknown context {name!r}; known contexts: {', '.join(known) or 'none'}",
            field="context",
            known=known,
        )


class InvalidPriors(GuardrailError):
    code = "invalid_priors"

    def __init__(self, problem: str):
        super().__init__(f"invalid priors: {problem}", field="priors")


class ModelOutputInvalid(ServiceError):
    code = "model_output_invalid"

    def __init__(self, problem: str):
        super().__init__(f"the model returned invalid probabilities: {problem}")
