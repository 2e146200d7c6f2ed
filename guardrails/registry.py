"""The guardrail stages in the order they run: the one list the rest derives from.

The pipeline builds its stages from `STAGE_TYPES`; stage names (traces, `/info`,
metric labels) and abstention reasons (answers, metric labels) are read from it,
never copied. A new stage is a module with a class following `guardrails.batch.
Stage` and one line below. Stages that run before the model come first.
"""

from __future__ import annotations

from guardrails.batch import Stage, StageSetup
from guardrails.blacklist import BlacklistStage
from guardrails.conformal import ConformalStage
from guardrails.decision import DecisionStage
from guardrails.input_bounds import InputBoundsStage
from guardrails.output_bounds import OutputBoundsStage
from guardrails.priors import PriorsStage
from guardrails.temperature import TemperatureStage

STAGE_TYPES: tuple[type[Stage], ...] = (
    InputBoundsStage,
    TemperatureStage,
    PriorsStage,
    BlacklistStage,
    ConformalStage,
    OutputBoundsStage,
    DecisionStage,
)

STAGE_NAMES: tuple[str, ...] = tuple(t.name for t in STAGE_TYPES)
"""Every stage's name, in order."""

ABSTAIN_REASONS: tuple[str, ...] = tuple(
    dict.fromkeys(reason for t in STAGE_TYPES for reason in t.reasons)
)
"""Every abstention reason a stage may give, in stage order."""

REASON_CODES: dict[str, int] = {r: i + 1 for i, r in enumerate(ABSTAIN_REASONS)}
"""Reason -> the code a batch stores per row (0 means answered)."""

_before = [t.before_model for t in STAGE_TYPES]
if _before != sorted(_before, reverse=True):
    raise ImportError("stages that run before the model must come first")
if len(set(STAGE_NAMES)) != len(STAGE_NAMES):
    raise ImportError("stage names must be unique")


def build_stages(setup: StageSetup) -> list[Stage]:
    """Every stage, configured by `setup`, in the order it runs."""
    return [stage_type.build(setup) for stage_type in STAGE_TYPES]
