"""EM prior estimation and its guard, on synthetic data with known priors.

The data: three classes, 2-D Gaussians (unit variance) at the corners of a
triangle with side 3; the posteriors are exact Bayes posteriors under the training
priors, so they are calibrated and EM's assumptions hold.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardrails.em import (
    EM_TEMPERATURE_BOUNDS,
    em_priors,
    em_temperature,
    likelihood_ratio_test,
    sharpen,
    shrinkage_weight,
)
from guardrails.online_priors import OnlinePriorEstimator, row_keys
from guardrails.pipeline import GuardrailPipeline, RequestContext
from packs.calibration_scores import CalibrationSet
from tests.guardrails.helpers import PROPERTY, TRAIN_PRIORS, fixed, inside, make_meta
from tests.guardrails.helpers import make_policy as policy_with

TRAIN = np.array(list(TRAIN_PRIORS.values()))
MEANS = 3.0 * np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])

#: Stated tolerance: with 4,000 rows EM recovers every prior within 0.03.
TOLERANCE = 0.03
ROWS = 4000


def posteriors(priors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Training-prior posteriors for n rows drawn under `priors`."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=priors)
    x = MEANS[y] + rng.standard_normal((n, 2))
    log_lik = -0.5 * ((x[:, None, :] - MEANS[None]) ** 2).sum(axis=2)
    joint = np.exp(log_lik - log_lik.max(axis=1, keepdims=True)) * TRAIN
    return joint / joint.sum(axis=1, keepdims=True)


shifted_priors = st.lists(st.floats(0.02, 1.0), min_size=3, max_size=3).map(
    lambda w: np.array(w) / sum(w)
)


@PROPERTY
@given(priors=shifted_priors, seed=st.integers(0, 2**16))
def test_em_recovers_known_priors_on_shifted_data(priors, seed) -> None:
    estimate, iterations = em_priors(posteriors(priors, ROWS, seed), TRAIN, 500, 1e-8)
    assert np.abs(estimate - priors).max() < TOLERANCE
    assert np.isclose(estimate.sum(), 1.0) and iterations <= 500


def test_em_with_no_rows_or_no_shift_returns_training_priors() -> None:
    assert np.allclose(em_priors(np.empty((0, 3)), TRAIN)[0], TRAIN)
    estimate, _ = em_priors(posteriors(TRAIN, ROWS, 1), TRAIN)
    assert np.abs(estimate - TRAIN).max() < TOLERANCE


def test_likelihood_ratio_test_separates_shift_from_no_shift() -> None:
    shifted = posteriors(np.array([0.1, 0.1, 0.8]), 500, 2)
    p_shift = likelihood_ratio_test(shifted, TRAIN, em_priors(shifted, TRAIN)[0])
    assert p_shift < 1e-6
    same = posteriors(TRAIN, 500, 3)
    p_same = likelihood_ratio_test(same, TRAIN, em_priors(same, TRAIN)[0])
    assert p_same > 0.01
    assert likelihood_ratio_test(same, TRAIN, TRAIN) == 1.0


def test_likelihood_ratio_p_values_are_roughly_uniform_without_shift() -> None:
    p = [
        likelihood_ratio_test(rows, TRAIN, em_priors(rows, TRAIN)[0])
        for rows in (posteriors(TRAIN, 300, seed) for seed in range(60))
    ]
    # Under no shift about 5% of windows are "significant" at 0.05; allow noise.
    assert np.mean(np.array(p) < 0.05) <= 0.15


def _estimator(**kw: float) -> OnlinePriorEstimator:
    args = {"window_rows": 1000, "min_window_rows": 200, "significance": 0.01, **kw}
    return OnlinePriorEstimator(TRAIN, **args)  # type: ignore[arg-type]


def test_estimate_is_not_used_before_the_minimum_window() -> None:
    est = _estimator()
    assert not est.current().used and est.current().reason == "no estimate yet"
    est.observe(posteriors(np.array([0.05, 0.05, 0.9]), 199, 4))
    result = est.refresh()
    assert not result.used and result.window_rows == 199 and result.p_value is None
    assert "needs 200" in result.reason


def test_estimate_is_used_only_when_the_shift_is_significant() -> None:
    shifted = _estimator()
    shifted.observe(posteriors(np.array([0.05, 0.05, 0.9]), 400, 5))
    result = shifted.refresh()
    assert result.used and result.p_value is not None and result.p_value < 0.01
    assert abs(result.priors[2] - 0.9) < 0.06
    assert shifted.current() is result

    unshifted = _estimator()
    unshifted.observe(posteriors(TRAIN, 400, 6))
    assert not unshifted.refresh().used
    np.testing.assert_array_equal(unshifted.current().priors.shape, (3,))


def test_minimum_total_variation_keeps_small_shifts_out() -> None:
    est = _estimator(min_total_variation=0.5)
    est.observe(posteriors(np.array([0.3, 0.3, 0.4]), 1000, 7))
    result = est.refresh()
    assert not result.used and "shift too small" in result.reason


def test_window_keeps_only_the_most_recent_rows() -> None:
    est = _estimator(window_rows=5, min_window_rows=1)
    rows = np.eye(3)[[0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 1]]
    for start in range(0, len(rows), 3):  # batches of 3 wrap around the ring
        est.observe(rows[start : start + 3])
    assert est.rows_seen == 5
    window = est.window()
    assert sorted(window.argmax(axis=1).tolist()) == [0, 1, 2, 2, 2]
    est.observe(np.eye(3)[[1] * 12])  # a batch larger than the window
    assert (est.window().argmax(axis=1) == 1).all()


def test_observe_and_refresh_are_thread_safe() -> None:
    est = _estimator(window_rows=500, min_window_rows=1)
    rows = posteriors(np.array([0.1, 0.1, 0.8]), 50, 8)

    def feed() -> None:
        for _ in range(100):
            est.observe(rows)

    threads = [threading.Thread(target=feed) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(20):
        est.refresh()
    for t in threads:
        t.join()
    assert est.rows_seen == 500
    assert np.allclose(est.window().sum(axis=1), 1.0)  # no torn rows


def test_pipeline_uses_the_online_estimate_only_for_requests_without_context() -> None:
    policy = policy_with(
        priors={
            "contexts": {"home": {"cat": 1}},
            "online": {"enabled": True, "window_rows": 500, "min_window_rows": 100},
        }
    )
    meta = make_meta()
    est = OnlinePriorEstimator.from_policy(policy, meta)
    assert est is not None
    pipeline = GuardrailPipeline(policy, meta, est)
    probs = posteriors(np.array([0.05, 0.05, 0.9]), 300, 9)

    first = pipeline.run(inside(300), fixed(probs), RequestContext())
    assert first.traces[0][2]["source"] == "training"
    assert first.traces[0][2]["online"] == "no estimate yet"
    pipeline.run(inside(300), fixed(probs), RequestContext("home"))  # not observed
    assert est.rows_seen == 300

    assert est.refresh().used
    after = pipeline.run(inside(300), fixed(probs), RequestContext())
    assert after.traces[0][2]["source"] == "online"
    assert after.probabilities[:, 2].mean() > first.probabilities[:, 2].mean()
    explicit = RequestContext(priors=dict(TRAIN_PRIORS))
    assert (
        pipeline.run(inside(1), fixed(probs[:1]), explicit).traces[0][2]["source"]
        == "explicit"
    )


def test_from_policy_is_none_when_online_priors_are_off() -> None:
    assert OnlinePriorEstimator.from_policy(policy_with(), make_meta()) is None


def miscalibrated(priors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Posteriors of a model that systematically under-rates the second class."""
    p = posteriors(priors, n, seed) * np.array([1.0, 0.4, 1.0])
    return p / p.sum(axis=1, keepdims=True)


def test_anchoring_stops_a_miscalibrated_model_seeing_a_shift_that_is_not_there() -> (
    None
):
    reference = miscalibrated(TRAIN, 4000, 10)
    plain = _estimator(window_rows=2000)
    anchored = OnlinePriorEstimator(
        TRAIN, 2000, 200, 0.01, reference_probabilities=reference
    )
    assert anchored.null_priors[1] < TRAIN[1] - 0.05  # EM's bias, learned
    unshifted = miscalibrated(TRAIN, 2000, 11)
    assert plain.estimate(unshifted).used  # plain EM calls the bias a shift
    assert not anchored.estimate(unshifted).used

    shifted = miscalibrated(np.array([0.1, 0.1, 0.8]), 2000, 12)
    result = anchored.estimate(shifted)
    assert result.used
    assert abs(result.priors[2] - 0.8) < 0.1 and result.em_estimate is not None


def test_rows_outside_the_input_bounds_fill_the_window_across_requests() -> None:
    """200 rows over four requests, one in ten outside the input bounds: the
    window reaches its minimum of 200 and the estimate is computed."""
    policy = policy_with(
        input_bounds={"action": "abstain"},
        priors={"online": {"enabled": True, "window_rows": 1000}},
    )
    meta = make_meta()
    est = OnlinePriorEstimator.from_policy(policy, meta)
    assert est is not None
    pipeline = GuardrailPipeline(policy, meta, est)
    probs = posteriors(np.array([0.05, 0.05, 0.9]), 200, 11)
    features = inside(200)
    features[::10, 0] = 1e6  # far outside x0's training range
    for part in range(4):
        rows = slice(50 * part, 50 * (part + 1))
        out = pipeline.run(features[rows], fixed(probs[rows]), RequestContext())
        assert out.reasons.count("out_of_bounds") == 5
    estimate = est.refresh()
    assert est.rows_seen == 200 and estimate.rows_observed == 200
    assert "needs" not in estimate.reason and estimate.used
    assert estimate.left_out == {}


def test_the_estimate_says_which_rows_it_left_out_and_why() -> None:
    policy = policy_with(
        priors={
            "contexts": {"home": {"cat": 1}},
            "online": {"enabled": True, "window_rows": 500, "min_window_rows": 100},
        }
    )
    meta = make_meta()
    est = OnlinePriorEstimator.from_policy(policy, meta)
    assert est is not None
    pipeline = GuardrailPipeline(policy, meta, est)
    probs = posteriors(TRAIN, 30, 12)
    pipeline.run(inside(30), fixed(probs), RequestContext("home"))
    pipeline.run(inside(30), fixed(probs), RequestContext(priors=dict(TRAIN_PRIORS)))
    broken = probs.copy()
    broken[:4] = np.nan
    est.observe(broken)
    shown = est.current().to_dict(meta.labels)
    assert shown["rows_observed"] == 26
    assert shown["left_out"] == {
        "request named context:home priors": 30,
        "request named explicit priors": 30,
        "no finite probabilities": 4,
    }
    refreshed = est.refresh()
    assert refreshed.reason == "window has 26 rows, needs 100"
    assert refreshed.to_dict(meta.labels)["distinct_rows"] == 26


def test_row_keys_are_equal_for_equal_rows_and_differ_for_others() -> None:
    rows = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [1.0, 2.0 + 1e-6]])
    keys = row_keys(rows)
    assert keys[0] == keys[1]
    assert len(np.unique(keys)) == 3
    images = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    assert row_keys(images).shape == (2,)  # tensor-shaped inputs are flattened
    assert len(np.unique(row_keys(np.array([[np.nan, 1.0], [np.inf, 1.0]])))) == 1


def test_repeated_rows_are_not_evidence_of_a_shift() -> None:
    """40 unshifted rows, each sent 25 times: counted as 1,000 rows the test
    calls the 40 rows' sampling noise a shift; counted as 40 it does not."""
    rows = np.tile(posteriors(TRAIN, 40, 21), (25, 1))
    em, _ = em_priors(rows, TRAIN)
    assert likelihood_ratio_test(rows, TRAIN, em) < 1e-6
    assert likelihood_ratio_test(rows, TRAIN, em, effective_rows=40) > 0.4
    assert likelihood_ratio_test(rows, TRAIN, em, effective_rows=1000) == (
        likelihood_ratio_test(rows, TRAIN, em)
    )

    est = _estimator(window_rows=1000)
    est.observe(rows, np.tile(np.arange(40.0), 25))
    repeated = est.refresh()
    assert not repeated.used and repeated.distinct_rows == 40
    assert "40 distinct of 1000 rows" in repeated.reason
    assert _estimator().estimate(rows).used  # the same rows, all taken as distinct


@pytest.mark.parametrize(
    ("statistic", "labels", "weight"),
    [
        (0.0, 3, 0.0),
        (1.9, 3, 0.0),
        (2.0, 3, 0.0),
        (4.0, 3, 0.5),
        (200.0, 3, 0.99),
        (9.0, 10, 0.0),
        (18.0, 10, 0.5),
    ],
)
def test_shrinkage_keeps_only_the_evidence_beyond_noise(
    statistic: float, labels: int, weight: float
) -> None:
    assert shrinkage_weight(statistic, labels) == pytest.approx(weight)


def test_a_used_estimate_is_shrunk_towards_the_null_priors() -> None:
    est = _estimator(significance=1.0)
    rows = posteriors(np.array([0.35, 0.3, 0.35]), 300, 22)
    result = est.estimate(rows)
    assert result.used and result.em_estimate is not None
    assert 0.0 < result.shrinkage < 1.0
    between = (result.priors - TRAIN) / (result.em_estimate - TRAIN)
    assert np.allclose(between, result.shrinkage, atol=0.02)
    strong = est.estimate(posteriors(np.array([0.05, 0.05, 0.9]), 1000, 23))
    assert strong.shrinkage > 0.98


def _labelled(priors: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated posteriors and labels drawn from them."""
    p = posteriors(priors, n, seed)
    rng = np.random.default_rng(seed + 1)
    return p, np.array([rng.choice(3, p=row) for row in p])


def test_em_temperature_undoes_under_and_over_confidence() -> None:
    p, y = _labelled(TRAIN, 2000, 31)
    assert em_temperature(p, y) == pytest.approx(1.0, abs=0.1)
    assert em_temperature(sharpen(p, 3.0), y) == pytest.approx(1 / 3, abs=0.05)
    assert em_temperature(sharpen(p, 0.5), y) == pytest.approx(2.0, abs=0.2)
    assert em_temperature(sharpen(p[:9], 3.0), y[:9]) == 1.0  # too few rows
    assert em_temperature(sharpen(p[:10], 3.0), y[:10]) != 1.0


def test_em_temperature_is_never_sharper_than_the_accuracy_allows() -> None:
    """85 rows, all right, each 0.87 on its label: the log-loss optimum runs to
    the lower bound; the cap stops where the mean top probability reaches the
    Jeffreys mean of the accuracy, 85.5/86."""
    logits = np.zeros((85, 3))
    y = np.arange(85) % 3
    logits[np.arange(85), y] = 3.0
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    t = em_temperature(p, y)
    assert t > 5 * EM_TEMPERATURE_BOUNDS[0]
    assert sharpen(p, t).max(axis=1).mean() == pytest.approx(85.5 / 86, abs=1e-3)
    y_wrong = y.copy()
    y_wrong[:20] = (y[:20] + 1) % 3  # many errors: the log-loss optimum stands
    assert em_temperature(p, y_wrong) > 1.0


def test_calibrated_em_recovers_the_priors_an_under_confident_model_overshoots() -> (
    None
):
    truth = np.array([0.15, 0.15, 0.7])
    flat = sharpen(posteriors(truth, 4000, 34), 3.0)
    plain = _estimator(window_rows=4000).estimate(flat)
    p, y = _labelled(TRAIN, 1000, 35)
    fitted = em_temperature(sharpen(p, 3.0), y)
    calibrated = OnlinePriorEstimator(
        TRAIN, 4000, 200, 0.01, em_temperature=fitted
    ).estimate(flat)
    assert plain.em_estimate is not None and calibrated.em_estimate is not None
    assert plain.em_estimate[2] > truth[2] + 0.05  # overshoots the shift
    assert np.abs(calibrated.em_estimate - truth).max() < TOLERANCE
    assert calibrated.em_temperature == fitted


def test_from_policy_fits_the_em_temperature_on_the_validation_rows() -> None:
    policy = policy_with(priors={"online": {"enabled": True}})
    p, y = _labelled(TRAIN, 500, 36)
    validation = CalibrationSet(probabilities=sharpen(p, 3.0), labels=y)
    est = OnlinePriorEstimator.from_policy(policy, make_meta(), None, validation)
    assert est is not None and est.em_temperature < 0.5
    assert est.current().to_dict(make_meta().labels)["em_temperature"] < 0.5
    unfitted = OnlinePriorEstimator.from_policy(policy, make_meta())
    assert unfitted is not None and unfitted.em_temperature == 1.0


def test_the_pipeline_keys_the_window_by_the_request_inputs() -> None:
    policy = policy_with(priors={"online": {"enabled": True, "min_window_rows": 10}})
    meta = make_meta()
    est = OnlinePriorEstimator.from_policy(policy, meta)
    assert est is not None
    pipeline = GuardrailPipeline(policy, meta, est)
    probs = posteriors(TRAIN, 40, 37)
    pipeline.run(inside(40), fixed(probs), RequestContext())
    assert est.refresh().distinct_rows == 40
    same = np.tile(np.array([[7.5, 0.5]], np.float32), (40, 1))  # one input, 40 times
    pipeline.run(same, fixed(probs), RequestContext())
    assert est.refresh().distinct_rows == 41
