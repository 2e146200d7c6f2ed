"""Turn a model-pack directory (and a policy) into a regression `Predictor`.

The predictor runs the same `GuardrailPipeline` the service runs, so a regression
run answers exactly as the served model would. Two deliberate differences, both
about replaying stored rows rather than serving live ones:
- input-bounds "reject" becomes "abstain": one out-of-range case must count as a
  wrong answer for that case, not abort the whole run;
- a context the policy does not know (it changed since the report) is replayed
  without context instead of failing; online prior estimation is off.
(the `replay` mode of `guardrails.build.build_pipeline`). Without a policy file the
pipeline runs with the policy's defaults.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guardrails.batch import RequestContext
from guardrails.build import build_pipeline
from guardrails.pipeline import GuardrailPipeline
from guardrails.policy import Policy
from packs.loader import ModelPack

DEFAULT_POLICY_VERSION = "policy-defaults"


@dataclass
class PackPredictor:
    """A callable `(features, contexts) -> labels` with the versions it stands for."""

    pack: ModelPack
    pipeline: GuardrailPipeline

    @property
    def policy_version(self) -> str:
        return self.pipeline.policy_version

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
        known = set(self.pipeline.policy.contexts)
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, context in enumerate(contexts):
            groups[context if context in known else None].append(i)
        out: list[str | None] = [None] * len(x)
        for context, rows in groups.items():
            guarded = self.pipeline.run(
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
    policy = (
        Policy.load(policy_path)
        if policy_path is not None
        else Policy(version=DEFAULT_POLICY_VERSION)
    )
    return PackPredictor(pack, build_pipeline(pack, policy, "replay"))
