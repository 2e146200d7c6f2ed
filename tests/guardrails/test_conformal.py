"""Conformal prediction sets: the quantile against MAPIE's, the scores, coverage
with and without label shift, the stage in the pipeline and in the default pack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardrails.batch import RequestContext
from guardrails.build import build_pipeline
from guardrails.conformal_sets import (
    SetCalibrator,
    label_scores,
    naive_sets,
    row_uniforms,
    thresholds,
    true_label_scores,
    unweighted_threshold,
)
from guardrails.errors import PolicyInvalid
from guardrails.pipeline import GuardrailPipeline
from guardrails.policy import Policy
from packs.calibration_scores import CALIBRATION_FILE, CalibrationSet
from packs.loader import ModelPack
from tests.guardrails.helpers import (
    PROPERTY,
    TRAIN_PRIORS,
    fixed,
    inside,
    make_meta,
    make_policy,
)

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _synthetic(
    n: int, priors: np.ndarray, rng: np.random.Generator, sharpness: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose label is drawn from `priors` and whose probabilities are the
    exact posterior under the training mix TRAIN (a calibrated model)."""
    k = len(priors)
    y = rng.choice(k, size=n, p=priors)
    centres = np.eye(k) * sharpness
    x = centres[y] + rng.normal(size=(n, k))
    logits = x @ centres.T - 0.5 * (centres**2).sum(axis=1) + np.log(TRAIN)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True), y


TRAIN = np.array(list(TRAIN_PRIORS.values()))


@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.2, 0.37])
@pytest.mark.parametrize("n", [20, 99, 100, 500])
def test_unweighted_quantile_equals_mapie_on_the_same_scores(
    alpha: float, n: int
) -> None:
    from mapie.conformity_scores import LACConformityScore
    from mapie.utils import _compute_classification_quantile

    rng = np.random.default_rng(n)
    p, y = _synthetic(n, TRAIN, rng)
    ours = true_label_scores(label_scores(p, "lac"), y)
    theirs = LACConformityScore().get_conformity_scores(y, p, y_enc=y).ravel()
    np.testing.assert_allclose(ours, theirs)
    expected = _compute_classification_quantile(
        theirs.reshape(-1, 1), np.array([alpha])
    )
    assert unweighted_threshold(ours, alpha) == pytest.approx(float(expected[0]))


def test_too_few_calibration_rows_give_an_infinite_threshold() -> None:
    # ceil((n + 1)(1 - alpha)) > n: no finite quantile, every label is in the set.
    assert unweighted_threshold(np.array([0.1, 0.2, 0.3]), 0.1) == np.inf


@PROPERTY
@given(
    st.lists(st.floats(0, 2), min_size=1, max_size=60),
    st.floats(0.01, 0.99),
    st.floats(0.1, 10),
)
def test_equal_weights_give_the_unweighted_threshold(
    scores: list[float], alpha: float, weight: float
) -> None:
    s = np.array(scores)
    w = np.full(len(s), weight)
    weighted = thresholds(s, w, np.array([weight]), alpha)[0]
    plain = unweighted_threshold(s, alpha)
    # Only the float rounding of (1 - alpha) * total may tip it by one rank.
    ranked = np.sort(np.append(s, np.inf))
    assert (
        weighted == plain
        or abs(np.searchsorted(ranked, weighted) - np.searchsorted(ranked, plain)) <= 1
    )


def test_aps_and_raps_scores_by_hand() -> None:
    p = np.array([[0.5, 0.2, 0.3]])
    np.testing.assert_allclose(label_scores(p, "lac"), [[0.5, 0.8, 0.7]])
    np.testing.assert_allclose(label_scores(p, "aps"), [[0.5, 1.0, 0.8]])
    raps = label_scores(p, "raps", raps_lambda=0.1, raps_k_reg=1)
    np.testing.assert_allclose(raps, [[0.5, 1.2, 0.9]])


def test_naive_sets_stop_once_the_mass_reaches_one_minus_alpha() -> None:
    p = np.array([[0.5, 0.2, 0.3], [0.95, 0.03, 0.02]])
    assert naive_sets(p, 0.1).tolist() == [[True, True, True], [True, False, False]]
    assert naive_sets(p, 0.25).tolist() == [[True, False, True], [True, False, False]]


@pytest.mark.parametrize("score", ["lac", "aps", "raps"])
@pytest.mark.parametrize("alpha", [0.1, 0.05])
def test_sets_cover_the_true_label_without_shift(score: str, alpha: float) -> None:
    rng = np.random.default_rng(7)
    coverage = []
    for _ in range(40):
        cal_p, cal_y = _synthetic(400, TRAIN, rng)
        test_p, test_y = _synthetic(400, TRAIN, rng)
        calibrator = SetCalibrator(cal_p, cal_y, TRAIN, score=score, alpha=alpha)  # type: ignore[arg-type]
        sets = calibrator.sets(test_p)
        coverage.append(sets[np.arange(len(test_y)), test_y].mean())
    assert 1 - alpha - 0.01 <= np.mean(coverage) <= 1 - alpha + 0.03


def test_weighted_sets_keep_coverage_under_label_shift_and_plain_ones_do_not() -> None:
    rng = np.random.default_rng(3)
    deploy = np.array([0.02, 0.03, 0.95])  # the rare label becomes the usual one
    weights = deploy / TRAIN
    weighted, plain = [], []
    for _ in range(40):
        cal_p, cal_y = _synthetic(600, TRAIN, rng, sharpness=1.0)
        test_p, test_y = _synthetic(600, deploy, rng, sharpness=1.0)
        adjusted = test_p * weights
        adjusted /= adjusted.sum(axis=1, keepdims=True)
        calibrator = SetCalibrator(cal_p, cal_y, TRAIN, score="aps", alpha=0.1)
        hit = np.arange(len(test_y)), test_y
        weighted.append(calibrator.sets(adjusted, weights)[hit].mean())
        plain.append(calibrator.sets(adjusted, weights, reweight=False)[hit].mean())
    assert 0.88 <= np.mean(weighted) <= 0.93
    assert abs(np.mean(plain) - 0.9) > abs(np.mean(weighted) - 0.9)


def _shifted_coverage(
    randomize: bool, n_cal: int, rng: np.random.Generator, splits: int
) -> float:
    deploy = np.array([0.02, 0.03, 0.95])
    weights = deploy / TRAIN
    hits = []
    for _ in range(splits):
        cal_p, cal_y = _synthetic(n_cal, TRAIN, rng, sharpness=1.0)
        test_p, test_y = _synthetic(400, deploy, rng, sharpness=1.0)
        adjusted = test_p * weights
        adjusted /= adjusted.sum(axis=1, keepdims=True)
        calibrator = SetCalibrator(
            cal_p, cal_y, TRAIN, score="lac", alpha=0.1, randomize=randomize
        )
        sets = calibrator.sets(adjusted, weights)
        hits.append(sets[np.arange(len(test_y)), test_y].mean())
    return float(np.mean(hits))


def test_randomized_weighted_sets_cover_exactly_where_plain_ones_over_cover() -> None:
    # 60 calibration rows with the deployment's usual label rare in them: the
    # weighted quantile's step is wide and the deterministic sets over-cover.
    deterministic = _shifted_coverage(False, 60, np.random.default_rng(5), 300)
    randomized = _shifted_coverage(True, 60, np.random.default_rng(5), 300)
    assert deterministic > 0.93
    assert abs(randomized - 0.9) < 0.015


@given(seed=st.integers(0, 10_000), alpha=st.sampled_from([0.05, 0.1, 0.3]))
@PROPERTY
def test_randomized_sets_lie_inside_the_deterministic_ones(
    seed: int, alpha: float
) -> None:
    rng = np.random.default_rng(seed)
    cal_p, cal_y = _synthetic(int(rng.integers(5, 80)), TRAIN, rng)
    test_p, _ = _synthetic(50, TRAIN, rng)
    w = rng.dirichlet(np.ones(3)) / TRAIN
    args = dict(score="lac", alpha=alpha)
    plain = SetCalibrator(cal_p, cal_y, TRAIN, **args)  # type: ignore[arg-type]
    smooth = SetCalibrator(cal_p, cal_y, TRAIN, randomize=True, **args)  # type: ignore[arg-type]
    for prior in (None, w):
        inner = smooth.sets(test_p, prior)
        assert not (inner & ~plain.sets(test_p, prior)).any()


def test_row_uniforms_are_uniform_and_fixed_per_row() -> None:
    p, _ = _synthetic(20_000, TRAIN, np.random.default_rng(2))
    u = row_uniforms(p)
    assert ((u >= 0) & (u < 1)).all()
    np.testing.assert_array_equal(row_uniforms(p.copy()), u)
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert counts.min() > 1_800 and counts.max() < 2_200


def test_thresholds_are_computed_once_per_prior() -> None:
    rng = np.random.default_rng(0)
    cal_p, cal_y = _synthetic(200, TRAIN, rng)
    calibrator = SetCalibrator(
        cal_p, cal_y, TRAIN, score="lac", alpha=0.1, cache_size=2
    )
    w = np.array([2.0, 1.0, 0.5])
    first = calibrator.thresholds(w)
    assert calibrator.thresholds(w.copy()) is first
    assert calibrator.thresholds(None) is not first
    calibrator.thresholds(np.array([1.0, 2.0, 0.5]))
    assert calibrator.thresholds(w) is not first  # evicted: cache holds 2


# --- the stage ----------------------------------------------------------------


def _calibration(n: int = 300) -> CalibrationSet:
    p, y = _synthetic(n, TRAIN, np.random.default_rng(11))
    return CalibrationSet(p, y)


def _pipeline(**conformal: object) -> GuardrailPipeline:
    policy = make_policy(conformal={"enabled": True, **conformal})
    return GuardrailPipeline(policy, make_meta(), calibration=_calibration())


def test_report_mode_gives_every_row_a_set_and_abstains_on_none() -> None:
    probs = np.array([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25]])
    out = _pipeline().run(inside(2), fixed(probs), RequestContext())
    sets = out.prediction_set_lists(["cat", "dog", "fox"])
    assert sets is not None and sets[0] == ["cat"] and len(sets[1]) >= 2
    assert not out.abstained.any()
    assert out.traces[0][4]["stage"] == "conformal"


def test_abstain_mode_abstains_on_large_sets_with_the_reason() -> None:
    probs = np.array([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25]])
    out = _pipeline(mode="abstain", max_set_size=1).run(
        inside(2), fixed(probs), RequestContext()
    )
    assert out.reasons == [None, "large_prediction_set"]
    assert out.traces[1][4]["acted"] is True and out.traces[1][4]["set_size"] >= 2


def test_abstain_on_empty_sets() -> None:
    # With alpha 0.5, a row spread evenly fits no label.
    probs = np.array([[1 / 3, 1 / 3, 1 / 3]])
    out = _pipeline(mode="abstain", alpha=0.5, abstain_on_empty=True).run(
        inside(1), fixed(probs), RequestContext()
    )
    assert out.prediction_sets is not None and not out.prediction_sets.any()
    assert out.reasons == ["empty_prediction_set"]


def test_explicit_priors_change_the_thresholds() -> None:
    pipeline = _pipeline(score="aps")
    probs = np.array([[0.5, 0.3, 0.2]])
    plain = pipeline.run(inside(1), fixed(probs), RequestContext())
    shifted = pipeline.run(
        inside(1),
        fixed(probs),
        RequestContext(priors={"cat": 0.01, "dog": 0.01, "fox": 0.98}),
    )
    assert plain.prediction_sets is not None and shifted.prediction_sets is not None
    assert shifted.prediction_sets[0, 2]  # fox, now the usual label, is in
    assert shifted.prediction_sets[0].tolist() != plain.prediction_sets[0].tolist()


def test_without_a_calibration_set_the_stage_says_so_and_gives_no_sets() -> None:
    policy = make_policy(conformal={"enabled": True})
    out = GuardrailPipeline(policy, make_meta()).run(
        inside(1), fixed(np.array([[0.6, 0.3, 0.1]])), RequestContext()
    )
    assert out.prediction_sets is None
    assert out.traces[0][4]["note"] == "pack has no calibration set"


def test_abstain_mode_without_a_rule_is_refused() -> None:
    with pytest.raises(PolicyInvalid, match="max_set_size or abstain_on_empty"):
        Policy.from_yaml("version: x\nconformal: {enabled: true, mode: abstain}\n")


# --- the default pack ---------------------------------------------------------


def test_default_pack_keeps_its_validation_split_for_calibration(
    default_pack: Path,
) -> None:
    assert (default_pack / CALIBRATION_FILE).is_file()
    pack = ModelPack.load(default_pack, providers=["CPUExecutionProvider"])
    calibration = pack.calibration()
    assert calibration is not None
    assert calibration.probabilities.shape == (
        len(calibration.labels),
        len(pack.metadata.labels),
    )
    # The stored probabilities are the model's own output, not a copy of labels.
    assert (calibration.probabilities.argmax(1) == calibration.labels).mean() > 0.8


def test_default_policy_gives_every_penguin_a_set_in_report_mode(
    default_pack: Path,
) -> None:
    import pandas as pd

    pack = ModelPack.load(default_pack, providers=["CPUExecutionProvider"])
    pipeline = build_pipeline(pack, Policy.load(POLICIES / "default.yaml"))
    test = pd.read_parquet(pack.test_path())
    covered = []
    for island, rows in test.groupby("island"):
        x = rows[pack.metadata.feature_names].to_numpy(np.float32)
        out = pipeline.run(x, pack.predict_proba, RequestContext(str(island)))
        sets = out.prediction_set_lists(pack.metadata.labels)
        assert sets is not None and len(sets) == len(rows)
        assert not out.abstained.any() or "large_prediction_set" not in out.reasons
        covered += [y in s for y, s in zip(rows["label"], sets, strict=True)]
    assert np.mean(covered) >= 0.85


def test_the_default_policy_gives_a_repeated_row_the_same_randomised_set(
    default_pack: Path,
) -> None:
    import pandas as pd

    policy = Policy.load(POLICIES / "default.yaml")
    assert policy.conformal.randomize
    pack = ModelPack.load(default_pack, providers=["CPUExecutionProvider"])
    pipeline = build_pipeline(pack, policy)
    test = pd.read_parquet(pack.test_path())
    x = test[pack.metadata.feature_names].to_numpy(np.float32)
    twice = np.concatenate([x, x[::-1]])
    out = pipeline.run(twice, pack.predict_proba, RequestContext("Dream"))
    sets = out.prediction_sets
    assert sets is not None
    np.testing.assert_array_equal(sets[: len(x)], sets[len(x) :][::-1])
