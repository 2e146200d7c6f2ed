"""Temperature scaling with the pack's fitted T, as far as the policy trusts it
(see `guardrails.temperature_scaling`)."""

from __future__ import annotations

from guardrails.batch import Batch, Stage, StageSetup, Trace, TraceColumn
from guardrails.policy import TemperaturePolicy
from guardrails.temperature_scaling import resolve_temperature, scale
from packs.format import TemperatureFit


class TemperatureStage(Stage):
    name = "temperature"

    @classmethod
    def build(cls, setup: StageSetup) -> TemperatureStage:
        return cls(setup.policy.temperature, setup.meta.temperature)

    def __init__(self, policy: TemperaturePolicy, fit: TemperatureFit):
        self.temperature, note = resolve_temperature(policy, fit)
        self._trace: Trace = {
            "stage": self.name,
            "acted": self.temperature != 1.0,
            "temperature": self.temperature,
            "note": note,
        }

    def apply(self, batch: Batch, prepared: None) -> TraceColumn:
        if self.temperature != 1.0:
            batch.probabilities = scale(batch.probabilities, self.temperature)
        # Temperature is monotone per row: it never changes the top label.
        return TraceColumn(self._trace)
