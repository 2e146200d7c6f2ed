"""Turn a model-pack directory (and a policy) into a regression `Predictor`.

The predictor runs the same `GuardrailPipeline` the service runs, so a regression
run answers exactly as the served model would. Two deliberate differences, both
about replaying stored rows rather than serving live ones:
- input-bounds "reject" becomes "abstain": one out-of-range case must count as a
  wrong answer for that case, not abort the whole run;
- a context the policy does not know (it changed since the report) is replayed
  without context instead of failing; online prior estimation is off.
Without a policy file the pipeline runs with the policy's defaults. If the
guardrails package cannot be imported the predictor is the pack's argmax.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from packs.loader import ModelPack

DEFAULT_POLICY_VERSION = "policy-defaults"


@dataclass
class PackPredictor:
    """A callable `(features, contexts) -> labels` with the versions it stands for."""

    pack: ModelPack
    pipeline: Any | None
    policy_version: str | None

    @property
    def version(self) -> str:
        return self.pack.metadata.version

    @property
    def labels(self) -> list[str]:
        return list(self.pack.metadata.labels)

    @property
    def feature_names(self) -> list[str]:
        return list(self.pack.metadata.feature_names)

    def __call__(
        self, features: np.ndarray, contexts: list[str | None]
    ) -> list[str | None]:
        x = np.asarray(features, dtype=np.float64)
        if self.pipeline is None:
            best = self.pack.predict_proba(x).argmax(axis=1)
            return [self.labels[i] for i in best]
        return self._guarded(x, contexts)

    def _guarded(self, x: np.ndarray, contexts: list[str | None]) -> list[str | None]:
        from guardrails.pipeline import RequestContext

        known = set(self.pipeline.policy.contexts)  # type: ignore[union-attr]
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, context in enumerate(contexts):
            groups[context if context in known else None].append(i)
        out: list[str | None] = [None] * len(x)
        for context, rows in groups.items():
            guarded = self.pipeline.run(  # type: ignore[union-attr]
                x[rows], self.pack.predict_proba, RequestContext(context=context)
            )
            for i, label in zip(rows, guarded.labels, strict=True):
                out[i] = label
        return out


def pack_predictor(
    pack_dir: Path | str, policy_path: Path | str | None = None
) -> PackPredictor:
    """Load a pack (CPU is plenty for replay) and wrap it in the guardrails."""
    pack = ModelPack.load(pack_dir, providers=("CPUExecutionProvider",))
    try:
        from guardrails.pipeline import GuardrailPipeline
        from guardrails.policy import Policy
    except ImportError:
        if policy_path is not None:
            raise
        return PackPredictor(pack, None, None)
    policy = (
        Policy.load(policy_path)
        if policy_path is not None
        else Policy(version=DEFAULT_POLICY_VERSION)
    )
    policy = _for_replay(policy)
    return PackPredictor(pack, GuardrailPipeline(policy, pack.metadata), policy.version)


def _for_replay(policy: Any) -> Any:
    bounds = policy.input_bounds.model_copy(update={"action": "abstain"})
    online = policy.priors.online.model_copy(update={"enabled": False})
    priors = policy.priors.model_copy(update={"online": online})
    return policy.model_copy(update={"input_bounds": bounds, "priors": priors})
