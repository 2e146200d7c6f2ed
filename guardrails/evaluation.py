"""Offline evaluation of the calibration steps on a pack's held-out test set.

The test set is split by island, each island being a real prior-shifted
deployment (Torgersen has only Adelie penguins, Dream no Gentoo, Biscoe no
Chinstrap). For each deployment the table shows accuracy, log-loss and expected
calibration error (ECE) of:

    raw model             the model's probabilities
    + temperature         the pack's temperature within the policy's bounds
    + context priors      ... and the island's priors from the policy
    + EM priors (guarded) ... or instead the online EM estimate as the service
                          computes it (anchored on the pack's reference rows), used
                          only when the window is big enough and the likelihood-
                          ratio test and the minimum shift say so
    + EM priors (always)  ... plain EM, its estimate used unconditionally

The real island test sets are small (13-32 rows), below any sensible minimum EM
window, so the evaluation also resamples the test rows to each island's species
mix (and to the training mix: no shift) at `resampled_rows` rows, `repeats` times,
and reports means. Every number comes from a pipeline built by `guardrails.build.
build_pipeline` (mode `evaluate`), the recipe the service serves with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from guardrails.batch import RequestContext
from guardrails.build import build_pipeline
from guardrails.policy import Policy
from guardrails.temperature_scaling import resolve_temperature
from packs.calibration import expected_calibration_error, log_loss
from packs.format import LABEL_COLUMN, PackMetadata
from packs.loader import ModelPack, load_table

CONTEXT_COLUMN = "island"
VARIANTS = (
    "raw model",
    "+ temperature",
    "+ context priors",
    "+ EM priors (guarded)",
    "+ EM priors (always)",
)


@dataclass(frozen=True)
class Result:
    deployment: str
    rows: int
    variant: str
    accuracy: float
    log_loss: float
    ece: float
    note: str = ""


@dataclass
class EvaluationTable:
    pack: str
    policy_version: str
    temperature_note: str
    results: list[Result] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = [
            f"Pack `{self.pack}`, policy `{self.policy_version}`; "
            f"temperature: {self.temperature_note}.",
            "",
            "| deployment | rows | variant | accuracy | log-loss | ECE | note |",
            "|---|---:|---|---:|---:|---:|---|",
        ]
        for r in self.results:
            lines.append(
                f"| {r.deployment} | {r.rows} | {r.variant} | {r.accuracy:.3f} | "
                f"{r.log_loss:.4f} | {r.ece:.4f} | {r.note} |"
            )
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Deployment:
    name: str
    features: np.ndarray
    y: np.ndarray
    context: str | None


def _metrics(probs: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    accuracy = float((probs.argmax(axis=1) == y).mean())
    return accuracy, log_loss(probs, y), expected_calibration_error(probs, y)


def _with_online(policy: Policy, **changes: object) -> Policy:
    """`policy` with its online prior settings changed."""
    online = policy.priors.online.model_copy(update=changes)
    priors = policy.priors.model_copy(update={"online": online})
    return policy.model_copy(update={"priors": priors})


def _em(
    policy: Policy, model: ModelPack, d: _Deployment, *, guarded: bool
) -> tuple[np.ndarray, str, bool]:
    """Feed the deployment through a pipeline with an online estimator, refresh,
    and run it again: the second run uses the estimate if its guard lets it.
    `guarded` is the estimator as the policy configures it (anchored on the pack's
    reference rows); otherwise plain EM, used unconditionally."""
    online = policy.priors.online
    window = max(online.min_window_rows, len(d.y))
    changes: dict[str, object] = {"enabled": True, "window_rows": window}
    if not guarded:
        changes.update(
            significance=1.0,
            min_window_rows=1,
            min_total_variation=0,
            anchor_on_reference=False,
        )
    pipeline = build_pipeline(model, _with_online(policy, **changes), "evaluate")
    estimator = pipeline.prior_estimator
    assert estimator is not None
    pipeline.run(d.features, model.predict_proba, RequestContext())
    estimate = estimator.refresh()
    out = pipeline.run(d.features, model.predict_proba, RequestContext())
    if estimate.em_estimate is None:
        note = f"not used: {estimate.reason}"
    else:
        shown = ", ".join(f"{v:.2f}" for v in estimate.em_estimate)
        used = "used" if estimate.used else "not used"
        note = f"EM [{shown}], LR p = {estimate.p_value:.2g}: {used}"
    return out.probabilities, note, estimate.used


def _variants(
    policy: Policy, model: ModelPack, d: _Deployment
) -> list[tuple[str, np.ndarray, str, bool]]:
    """(variant, probabilities, note, EM estimate used) for one deployment."""
    raw = model.predict_proba(d.features)
    raw = raw / raw.sum(axis=1, keepdims=True)
    plain = build_pipeline(model, _with_online(policy, enabled=False), "evaluate")
    tempered = plain.run(d.features, model.predict_proba, RequestContext())
    out = [
        ("raw model", raw, "", False),
        ("+ temperature", tempered.probabilities, "", False),
    ]
    if d.context is not None:
        known = plain.run(d.features, model.predict_proba, RequestContext(d.context))
        out.append(("+ context priors", known.probabilities, "", False))
    for name, guarded in (
        ("+ EM priors (guarded)", True),
        ("+ EM priors (always)", False),
    ):
        out.append((name, *_em(policy, model, d, guarded=guarded)))
    return out


def _resample(
    frame: pd.DataFrame, labels: list[str], mix: dict[str, float], rows: int, seed: int
) -> pd.DataFrame:
    """`rows` rows drawn with replacement with species shares `mix`."""
    rng = np.random.default_rng(seed)
    present = [
        lab
        for lab in labels
        if mix.get(lab, 0) > 0 and (frame[LABEL_COLUMN] == lab).any()
    ]
    shares = np.array([mix[lab] for lab in present])
    counts = rng.multinomial(rows, shares / shares.sum())
    parts = []
    for lab, count in zip(present, counts, strict=True):
        pool = frame.index[frame[LABEL_COLUMN] == lab].to_numpy()
        parts.append(frame.loc[rng.choice(pool, size=count)])
    return pd.concat(parts, ignore_index=True)


def _deployment(
    name: str, frame: pd.DataFrame, meta: PackMetadata, context: str | None
) -> _Deployment:
    index = {label: i for i, label in enumerate(meta.labels)}
    return _Deployment(
        name,
        frame[meta.feature_names].to_numpy(dtype=meta.input.dtype),
        frame[LABEL_COLUMN].map(index).to_numpy(),
        context,
    )


def evaluate(
    pack_dir: Path,
    policy: Policy,
    *,
    resampled_rows: int = 1000,
    repeats: int = 10,
    seed: int = 0,
) -> EvaluationTable:
    """The evaluation table for a pack whose `test.parquet` has an `island`
    column with values that are contexts of `policy`."""
    model = ModelPack.load(pack_dir, providers=["CPUExecutionProvider"])
    meta = model.metadata
    policy.check_against(meta)
    test = load_table(model.test_path())
    temperature, why = resolve_temperature(policy.temperature, meta.temperature)
    table = EvaluationTable(
        pack=f"{meta.name} {meta.version}",
        policy_version=policy.version,
        temperature_note=f"T = {temperature:g} ({why})",
    )
    islands = [c for c in sorted(test[CONTEXT_COLUMN].unique()) if c in policy.contexts]

    def add(d: _Deployment) -> list[tuple[str, np.ndarray, str, bool]]:
        variants = _variants(policy, model, d)
        for variant, probs, note, _ in variants:
            scores = _metrics(probs, d.y)
            table.results.append(Result(d.name, len(d.y), variant, *scores, note))
        return variants

    # The real held-out rows: one deployment per island, pooled, and unshifted.
    pooled: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for island in islands:
        d = _deployment(island, test[test[CONTEXT_COLUMN] == island], meta, island)
        for variant, probs, _, _ in add(d):
            pooled.setdefault(variant, []).append((probs, d.y))
    for variant, parts in pooled.items():
        probs = np.concatenate([p for p, _ in parts])
        y = np.concatenate([y for _, y in parts])
        name = "all islands, each in its context"
        table.results.append(Result(name, len(y), variant, *_metrics(probs, y)))
    add(_deployment("whole test set, no context (no shift)", test, meta, None))

    # Resampled to each island's species mix, and to the training mix (no shift).
    mixes: list[tuple[str, dict[str, float], str | None]] = [
        (c, policy.priors.contexts[c], c) for c in islands
    ]
    mixes.append(("training mix (no shift)", dict(meta.training_priors), None))
    for name, mix, context in mixes:
        scores: dict[str, list[tuple[float, float, float]]] = {}
        used: dict[str, int] = {}
        for r in range(repeats):
            frame = _resample(test, meta.labels, mix, resampled_rows, seed + r)
            d = _deployment(name, frame, meta, context)
            for variant, probs, _, was_used in _variants(policy, model, d):
                scores.setdefault(variant, []).append(_metrics(probs, d.y))
                used[variant] = used.get(variant, 0) + was_used
        for variant, values in scores.items():
            acc, loss, ece = np.mean(values, axis=0)
            note = f"used in {used[variant]}/{repeats}" if "EM" in variant else ""
            table.results.append(
                Result(
                    f"resampled: {name}", resampled_rows, variant, acc, loss, ece, note
                )
            )
    return table
