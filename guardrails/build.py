"""The one recipe for a guardrail pipeline: a model pack, a policy and a mode.

    serve     the policy as written: what the service answers with
    replay    stored rows replayed by a regression run: a row outside the input
              bounds abstains (one out-of-range case counts as a wrong answer for
              that case instead of failing the whole run), and there is no online
              prior estimate (a replay must not depend on recent traffic)
    evaluate  offline evaluation of held-out rows: a row outside the input bounds
              abstains (its probabilities are still scored); the online estimate
              is as the policy says, so an evaluation can feed it

The online prior estimate, when the policy turns it on, is anchored on the model's
output for the pack's reference rows and calibrated on its validation rows (see
`guardrails.online_priors`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from guardrails.online_priors import OnlinePriorEstimator
from guardrails.pipeline import GuardrailPipeline
from guardrails.policy import Policy
from packs.loader import ModelPack, load_table

Mode = Literal["serve", "replay", "evaluate"]
MODES: tuple[Mode, ...] = ("serve", "replay", "evaluate")


def build_pipeline(
    pack: ModelPack, policy: Policy, mode: Mode = "serve"
) -> GuardrailPipeline:
    """The guardrail pipeline for `pack` under `policy` in `mode`."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; modes: {MODES}")
    policy = policy_for(policy, mode)
    estimator = None
    online = policy.priors.online
    validation = (
        pack.calibration() if online.enabled or policy.conformal.enabled else None
    )
    if online.enabled:
        reference = (
            reference_probabilities(pack) if online.anchor_on_reference else None
        )
        estimator = OnlinePriorEstimator.from_policy(
            policy, pack.metadata, reference, validation
        )
    calibration = validation if policy.conformal.enabled else None
    return GuardrailPipeline(policy, pack.metadata, estimator, calibration)


def policy_for(policy: Policy, mode: Mode) -> Policy:
    """`policy` as `mode` applies it."""
    if mode == "serve":
        return policy
    bounds = policy.input_bounds.model_copy(update={"action": "abstain"})
    changes: dict[str, object] = {"input_bounds": bounds}
    if mode == "replay":
        online = policy.priors.online.model_copy(update={"enabled": False})
        changes["priors"] = policy.priors.model_copy(update={"online": online})
    return policy.model_copy(update=changes)


def reference_probabilities(pack: ModelPack) -> np.ndarray:
    """The model's raw output on the pack's reference rows (in distribution)."""
    meta = pack.metadata
    table = load_table(pack.reference_path())
    return pack.predict_proba(
        table[meta.feature_names].to_numpy(dtype=meta.input.dtype)
    )
