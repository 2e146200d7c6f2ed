"""The pipeline's behaviour per stage on hand-made rows, its request errors, and
the default penguin pack end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from guardrails.batch import Batch
from guardrails.errors import (
    FeaturesInvalid,
    InvalidPriors,
    ModelOutputInvalid,
    PolicyInvalid,
    UnknownContext,
)
from guardrails.pipeline import GuardrailPipeline, RequestContext
from guardrails.policy import Policy
from guardrails.registry import ABSTAIN_REASONS, REASON_CODES, STAGE_NAMES, STAGE_TYPES
from packs.calibration_scores import CalibrationSet
from packs.loader import ModelPack
from tests.guardrails.helpers import fixed, inside, make_meta, make_policy

POLICIES = Path(__file__).resolve().parents[2] / "policies"
STAGES = [
    "input_bounds",
    "temperature",
    "priors",
    "blacklist",
    "conformal",
    "output_bounds",
    "decision",
]


def _run(
    policy: Policy, probs: list[list[float]], ctx: RequestContext = RequestContext()
):  # type: ignore[no-untyped-def]
    p = np.array(probs, dtype=float)
    return GuardrailPipeline(policy, make_meta()).run(inside(len(p)), fixed(p), ctx)


def test_stages_run_in_the_documented_order() -> None:
    pipeline = GuardrailPipeline(make_policy(), make_meta())
    assert pipeline.stage_names() == STAGES
    assert pipeline.policy_version == "test"
    out = _run(make_policy(), [[0.6, 0.3, 0.1]])
    assert [e["stage"] for e in out.traces[0]] == STAGES


def test_context_priors_change_the_answer_and_the_trace_says_so() -> None:
    policy = make_policy(priors={"contexts": {"zoo": {"dog": 9, "fox": 1}}})
    probs = [[0.5, 0.4, 0.1], [0.99, 0.005, 0.005]]
    plain = _run(policy, probs)
    zoo = _run(policy, probs, RequestContext("zoo"))
    assert plain.labels == ["cat", "cat"]
    assert zoo.labels == ["dog", "cat"]
    changed, unchanged = zoo.traces[0][2], zoo.traces[1][2]
    assert changed["acted"] and changed["source"] == "context:zoo"
    assert (changed["top_before"], changed["top_after"]) == ("cat", "dog")
    assert "top_before" not in unchanged and unchanged["acted"]
    # floor 0.01 keeps cat possible: 0.01 / (1 + 0.01) after renormalising
    assert changed["priors"]["cat"] == pytest.approx(0.0099, abs=1e-4)
    np.testing.assert_allclose(zoo.model_probabilities, probs)
    assert plain.traces[0][2] == {
        "stage": "priors",
        "acted": False,
        "source": "training",
    }


def test_explicit_priors_take_precedence_over_the_context() -> None:
    policy = make_policy(priors={"contexts": {"zoo": {"dog": 1}}})
    ctx = RequestContext("zoo", priors={"cat": 0.1, "dog": 0.1, "fox": 0.8})
    out = _run(policy, [[0.4, 0.4, 0.2]], ctx)
    assert out.labels == ["fox"] and out.traces[0][2]["source"] == "explicit"


@pytest.mark.parametrize(
    ("priors", "words"),
    [
        ({"cat": 1, "dog": 1, "fox": 1, "cow": 1}, "unknown labels ['cow']"),
        ({"cat": 1, "dog": 1}, "missing labels ['fox']"),
        ({"cat": -1, "dog": 1, "fox": 1}, "finite and >= 0"),
        ({"cat": float("nan"), "dog": 1, "fox": 1}, "finite and >= 0"),
        ({"cat": 0, "dog": 0, "fox": 0}, "all zero"),
    ],
)
def test_bad_explicit_priors_are_refused(priors: dict[str, float], words: str) -> None:
    with pytest.raises(InvalidPriors) as info:
        _run(make_policy(), [[0.5, 0.3, 0.2]], RequestContext(priors=priors))
    assert words in info.value.message and info.value.status_code == 422


def test_unknown_context_lists_the_known_ones() -> None:
    policy = make_policy(priors={"contexts": {"zoo": {"dog": 1}, "home": {}}})
    with pytest.raises(UnknownContext) as info:
        _run(policy, [[0.5, 0.3, 0.2]], RequestContext("moon"))
    assert info.value.detail["known"] == ["home", "zoo"]
    assert "'moon'" in info.value.message and info.value.status_code == 422


def test_blacklist_fallback_answers_the_best_allowed_label() -> None:
    policy = make_policy(blacklist={"global": ["cat"]})
    out = _run(policy, [[0.7, 0.1, 0.2], [0.1, 0.8, 0.1]])
    assert out.labels == ["fox", "dog"] and not out.abstained.any()
    assert out.traces[0][3] == {
        "stage": "blacklist",
        "acted": True,
        "action": "fallback",
        "blocked": "cat",
        "fallback": "fox",
    }
    assert out.traces[1][3]["acted"] is False
    np.testing.assert_allclose(out.probabilities[0], [0.7, 0.1, 0.2])  # shown as is


def test_per_context_blacklist_abstains_only_in_that_context() -> None:
    policy = make_policy(
        priors={"contexts": {"home": {}}},
        blacklist={"per_context": {"home": ["cat"]}, "action": "abstain"},
    )
    assert _run(policy, [[0.7, 0.1, 0.2]]).labels == ["cat"]
    home = _run(policy, [[0.7, 0.1, 0.2]], RequestContext("home"))
    assert home.labels == [None] and home.reasons == ["blacklisted"]
    assert home.traces[0][3]["blocked"] == "cat"
    assert home.traces[0][2]["source"] == "training"  # a context without priors


def test_every_label_blacklisted_abstains_every_row() -> None:
    out = _run(
        make_policy(blacklist={"global": ["cat", "dog", "fox"]}), [[1, 0, 0]] * 2
    )
    assert out.labels == [None, None] and out.reasons == ["blacklisted"] * 2


@pytest.mark.parametrize(
    ("probs", "reason"),
    [
        ([0.45, 0.35, 0.2], "low_confidence"),
        ([0.55, 0.44, 0.01], "high_entropy"),
        ([0.9, 0.05, 0.05], None),
    ],
)
def test_output_bounds_abstain_with_the_reason(
    probs: list[float], reason: str | None
) -> None:
    policy = make_policy(
        output_bounds={"min_top_probability": 0.5, "max_entropy_nats": 0.7}
    )
    out = _run(policy, [probs])
    assert out.reasons == [reason] and out.abstained[0] == (reason is not None)
    assert out.traces[0][5]["acted"] == (reason is not None)
    if reason:
        assert out.traces[0][5]["reason"] == reason
        np.testing.assert_allclose(out.probabilities[0], probs)


def test_low_confidence_uses_the_best_allowed_label() -> None:
    # fox is blacklisted; the best allowed label (cat, 0.3) is under the bar.
    policy = make_policy(
        blacklist={"global": ["fox"]}, output_bounds={"min_top_probability": 0.5}
    )
    out = _run(policy, [[0.3, 0.1, 0.6]])
    assert out.reasons == ["low_confidence"]
    assert out.traces[0][5]["top_probability"] == 0.3


def test_first_abstention_reason_wins() -> None:
    policy = make_policy(
        input_bounds={"action": "abstain"}, output_bounds={"min_top_probability": 0.9}
    )
    p = np.array([[0.4, 0.3, 0.3]])
    features = np.array([[100.0, 0.0]], dtype=np.float32)
    out = GuardrailPipeline(policy, make_meta()).run(
        features, fixed(p), RequestContext()
    )
    assert out.reasons == ["out_of_bounds"]
    assert out.traces[0][5]["reason"] == "low_confidence"


@pytest.mark.parametrize(
    ("fitted_t", "rows", "policy", "used", "note"),
    [
        (2.0, 100, {}, 2.0, "fitted"),
        (0.1, 100, {}, 0.5, "clamped from 0.1"),
        (9.0, 100, {"max": 4.0}, 4.0, "clamped from 9"),
        (2.0, 10, {}, 1.0, "fitted on 10 rows, policy needs 30"),
        (2.0, 100, {"enabled": False}, 1.0, "disabled"),
    ],
)
def test_temperature_is_bounded_and_needs_enough_validation_rows(
    fitted_t: float, rows: int, policy: dict, used: float, note: str
) -> None:
    meta = make_meta(temperature=fitted_t, validation_rows=rows)
    pipeline = GuardrailPipeline(make_policy(temperature=policy), meta)
    probs = np.array([[0.8, 0.15, 0.05]])
    out = pipeline.run(inside(1), fixed(probs), RequestContext())
    entry = out.traces[0][1]
    assert entry["temperature"] == used and note in entry["note"]
    assert entry["acted"] == (used != 1.0)
    expected = probs ** (1 / used)
    np.testing.assert_allclose(out.probabilities, expected / expected.sum(), rtol=1e-12)


@pytest.mark.parametrize(
    "raw",
    [
        np.array([[0.5, 0.5]]),
        np.array([[np.nan, 0.5, 0.5]]),
        np.array([[0.0, 0.0, 0.0]]),
        np.array([[-0.1, 0.6, 0.5]]),
    ],
)
def test_a_broken_model_output_is_a_server_error(raw: np.ndarray) -> None:
    pipeline = GuardrailPipeline(make_policy(), make_meta())
    with pytest.raises(ModelOutputInvalid) as info:
        pipeline.run(inside(1), fixed(raw), RequestContext())
    assert info.value.status_code == 500


def test_rounding_error_below_zero_is_read_as_zero() -> None:
    # skl2onnx's tree ensembles answer about -1e-8 for a class no leaf row had.
    pipeline = GuardrailPipeline(make_policy(), make_meta())
    raw = np.array([[1.0 + 3e-8, -3e-8, 0.0], [0.2, 0.3, 0.5]])
    out = pipeline.run(inside(2), fixed(raw), RequestContext())
    assert (out.probabilities >= 0).all()
    assert out.probabilities[0, 1] == 0.0
    np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0)


@pytest.mark.parametrize("shape", [(2, 3), (2,), (1, 1, 2)])
def test_features_of_the_wrong_shape_are_refused(shape: tuple[int, ...]) -> None:
    pipeline = GuardrailPipeline(make_policy(), make_meta())
    with pytest.raises(FeaturesInvalid, match=r"\['x0', 'x1'\]"):
        pipeline.run(
            np.zeros(shape, np.float32), fixed(np.ones((2, 3))), RequestContext()
        )


def test_an_empty_batch_gives_an_empty_answer() -> None:
    pipeline = GuardrailPipeline(make_policy(), make_meta())
    out = pipeline.run(inside(0), fixed(np.empty((0, 3))), RequestContext())
    assert out.labels == [] and out.traces == [] and out.probabilities.shape == (0, 3)


def test_unnormalised_model_output_is_renormalised() -> None:
    out = _run(make_policy(), [[2.0, 1.0, 1.0]])
    np.testing.assert_allclose(out.probabilities, [[0.5, 0.25, 0.25]])


def test_a_policy_with_labels_the_pack_lacks_cannot_build_a_pipeline() -> None:
    with pytest.raises(PolicyInvalid, match="unknown label 'cow'"):
        GuardrailPipeline(make_policy(blacklist={"global": ["cow"]}), make_meta())


def test_the_pipeline_runs_the_registry_stages_in_order() -> None:
    pipeline = GuardrailPipeline(make_policy(), make_meta())
    assert pipeline.stage_names() == list(STAGE_NAMES) == STAGES
    out = _run(make_policy(), [[0.6, 0.3, 0.1]])
    assert [entry["stage"] for entry in out.traces[0]] == STAGES
    assert [column.stage for column in out.trace_columns] == STAGES


def test_abstention_reasons_come_from_the_stages_that_give_them() -> None:
    given = {reason for t in STAGE_TYPES for reason in t.reasons}
    assert set(ABSTAIN_REASONS) == given
    assert set(REASON_CODES) == given and 0 not in REASON_CODES.values()
    # Every reason a stage can give shows up under its own name in an answer.
    seen = set()
    seen |= set(
        _run(
            make_policy(output_bounds={"min_top_probability": 0.9}), [[0.5, 0.3, 0.2]]
        ).reasons
    )
    seen |= set(
        _run(
            make_policy(output_bounds={"max_entropy_nats": 0.1}), [[0.4, 0.3, 0.3]]
        ).reasons
    )
    seen |= set(
        _run(
            make_policy(blacklist={"global": ["cat"], "action": "abstain"}),
            [[0.8, 0.1, 0.1]],
        ).reasons
    )
    pipeline = GuardrailPipeline(
        make_policy(input_bounds={"action": "abstain"}), make_meta()
    )
    far = np.array([[99.0, 0.0]], dtype=np.float32)
    seen |= set(
        pipeline.run(far, fixed(np.array([[0.8, 0.1, 0.1]])), RequestContext()).reasons
    )
    # Calibration rows as unsure as the request: its set holds every label.
    unsure = CalibrationSet(np.tile([0.4, 0.3, 0.3], (60, 1)), np.arange(60) % 3)
    # Calibration rows confidently right: an even row fits no label.
    sure = CalibrationSet(np.tile([0.9, 0.05, 0.05], (60, 1)), np.zeros(60, int))
    for conformal, calibration, probs in [
        ({"max_set_size": 1}, unsure, [0.4, 0.3, 0.3]),
        ({"abstain_on_empty": True}, sure, [0.34, 0.33, 0.33]),
    ]:
        section = {"enabled": True, "mode": "abstain", **conformal}
        policy = make_policy(conformal=section)
        pipeline = GuardrailPipeline(policy, make_meta(), calibration=calibration)
        out = pipeline.run(inside(1), fixed(np.array([probs])), RequestContext())
        seen |= set(out.reasons)
    assert seen - {None} == given


def test_scores_follow_the_probabilities_a_stage_sets() -> None:
    cost = np.array([[0.0, 1.0, 1.0], [5.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    batch = Batch(inside(1), ["cat", "dog", "fox"], REASON_CODES, cost)
    batch.probabilities = np.array([[0.9, 0.05, 0.05]])
    assert batch.best_allowed().tolist() == [0]
    # A later stage moving the probabilities must move the decision with them.
    batch.probabilities = np.array([[0.1, 0.8, 0.1]])
    assert batch.best_allowed().tolist() == [1]


# --- the default penguin pack ------------------------------------------------


@pytest.fixture(scope="module")
def penguins(default_pack: Path) -> tuple[ModelPack, pd.DataFrame]:
    pack = ModelPack.load(default_pack, providers=["CPUExecutionProvider"])
    return pack, pd.read_parquet(pack.test_path())


def test_default_policy_on_the_penguin_test_set(penguins) -> None:  # type: ignore[no-untyped-def]
    pack, test = penguins
    pipeline = GuardrailPipeline(Policy.load(POLICIES / "default.yaml"), pack.metadata)
    x = test[pack.metadata.feature_names].to_numpy(np.float32)
    for island, rows in test.groupby("island"):
        sel = rows.index.to_numpy()
        out = pipeline.run(x[sel], pack.predict_proba, RequestContext(str(island)))
        answered = ~out.abstained
        correct = (
            np.array(out.labels, dtype=object)[answered]
            == rows["label"].to_numpy()[answered]
        )
        assert correct.mean() >= 0.9
        assert out.traces[0][2]["source"] == f"context:{island}"
        json.dumps(out.traces)


def test_same_measurements_get_different_answers_per_island(penguins) -> None:  # type: ignore[no-untyped-def]
    pack, _ = penguins
    policy = Policy.load(POLICIES / "default.yaml")
    pipeline = GuardrailPipeline(policy, pack.metadata)
    # Walk a line between a typical Adelie and a typical Chinstrap; somewhere on it
    # the model is unsure, and there the island decides.
    adelie = np.array([38.8, 18.3, 190.0, 3700.0])
    chinstrap = np.array([48.8, 18.4, 196.0, 3730.0])
    line = np.array([adelie + t * (chinstrap - adelie) for t in np.linspace(0, 1, 201)])
    x = line.astype(np.float32)
    dream = pipeline.run(x, pack.predict_proba, RequestContext("Dream"))
    torgersen = pipeline.run(x, pack.predict_proba, RequestContext("Torgersen"))
    differ = [i for i in range(len(x)) if dream.labels[i] != torgersen.labels[i]]
    assert differ, "no point on the line where the island changes the answer"
    # Where the islands disagree, Torgersen (no Chinstraps) never says Chinstrap.
    assert {torgersen.labels[i] for i in differ} <= {"Adelie", None}
    assert {dream.labels[i] for i in differ} <= {"Chinstrap", None}


def test_strict_example_policy_never_answers_chinstrap_on_torgersen(penguins) -> None:  # type: ignore[no-untyped-def]
    pack, test = penguins
    pipeline = GuardrailPipeline(
        Policy.load(POLICIES / "strict-example.yaml"), pack.metadata
    )
    x = test[pack.metadata.feature_names].to_numpy(np.float32)
    out = pipeline.run(x, pack.predict_proba, RequestContext("Torgersen"))
    assert "Chinstrap" not in out.labels
    # Rows whose calibrated top label is Chinstrap abstain (blacklist action).
    top_is_chinstrap = out.probabilities.argmax(axis=1) == 1
    assert top_is_chinstrap.any()
    assert all(out.reasons[i] is not None for i in np.flatnonzero(top_is_chinstrap))
