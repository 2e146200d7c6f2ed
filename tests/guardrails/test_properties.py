"""Property-based tests of the guardrail math, over random probability rows,
priors, contexts and policies (hypothesis, derandomised for stable CI)."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from guardrails.decision import cost_matrix
from guardrails.pipeline import GuardrailPipeline, RequestContext
from guardrails.priors import adjust, prepare_priors
from guardrails.temperature_scaling import scale
from tests.guardrails.helpers import (
    LABELS,
    PROPERTY,
    TRAIN_PRIORS,
    fixed,
    inside,
    make_meta,
    make_policy,
    priors_dict,
    probability_rows,
)

TRAIN = np.array([TRAIN_PRIORS[label] for label in LABELS])


def _is_distribution(p: np.ndarray) -> bool:
    return bool(
        np.isfinite(p).all()
        and (p >= 0).all()
        and np.allclose(p.sum(axis=1), 1.0, atol=1e-9)
    )


@st.composite
def request_contexts(draw: st.DrawFn) -> RequestContext:
    kind = draw(st.sampled_from(["none", "context", "explicit"]))
    if kind == "context":
        return RequestContext(context=draw(st.sampled_from(["home", "zoo", "wild"])))
    if kind == "explicit":
        return RequestContext(priors=priors_dict(draw))
    return RequestContext()


@st.composite
def policies(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    hard_zeros = draw(st.booleans())
    blacklist = {
        "global": draw(st.lists(st.sampled_from(LABELS), max_size=3, unique=True)),
        "per_context": {
            "home": draw(st.lists(st.sampled_from(LABELS), max_size=3, unique=True))
        },
        "action": draw(st.sampled_from(["fallback", "abstain"])),
    }
    cost = draw(
        st.none()
        | st.dictionaries(
            st.sampled_from(LABELS),
            st.dictionaries(st.sampled_from(LABELS), st.floats(0, 10), max_size=3),
            max_size=3,
        )
    )
    return make_policy(
        priors={
            "contexts": {
                "home": {"cat": 1.0},
                "zoo": {"dog": 2.0, "fox": 1.0},
                "wild": {},
            },
            "allow_hard_zeros": hard_zeros,
            "floor": draw(st.sampled_from([0.0, 0.01])) if hard_zeros else 0.01,
            "smoothing": draw(st.sampled_from([0.0, 0.1])),
        },
        blacklist=blacklist,
        output_bounds={
            "min_top_probability": draw(st.sampled_from([0.0, 0.5, 0.9])),
            "max_entropy_nats": draw(st.sampled_from([None, 0.5])),
        },
        decision={"cost_matrix": cost},
    )


@PROPERTY
@given(probs=probability_rows(), policy=policies(), ctx=request_contexts())
def test_outputs_are_distributions_with_a_trace_per_stage(probs, policy, ctx) -> None:
    pipeline = GuardrailPipeline(policy, make_meta(temperature=1.7))
    out = pipeline.run(inside(len(probs)), fixed(probs), ctx)
    assert _is_distribution(out.probabilities)
    assert out.probabilities.shape == probs.shape
    assert len(out.labels) == len(out.reasons) == len(out.traces) == len(probs)
    for label, abstained, reason, trace in zip(
        out.labels, out.abstained, out.reasons, out.traces, strict=True
    ):
        assert (label is None) == bool(abstained) == (reason is not None)
        assert [entry["stage"] for entry in trace] == pipeline.stage_names()
        assert all(isinstance(entry["acted"], bool) for entry in trace)
    json.dumps(out.traces)  # the trace goes into responses and logs as JSON


@PROPERTY
@given(probs=probability_rows(), policy=policies(), ctx=request_contexts())
def test_trace_columns_agree_with_the_per_row_traces(probs, policy, ctx) -> None:
    # The service counts actions and logs traces from the columns, and answers
    # with per-row traces (row form) or the columns (column form): all must agree.
    pipeline = GuardrailPipeline(policy, make_meta(temperature=1.7))
    out = pipeline.run(inside(len(probs)), fixed(probs), ctx)
    acted = np.array([[entry["acted"] for entry in row] for row in out.traces])
    counts = dict(zip(pipeline.stage_names(), acted.sum(axis=0).tolist(), strict=True))
    assert out.acted_counts() == {stage: n for stage, n in counts.items() if n}
    assert out.acted_mask().tolist() == acted.any(axis=1).tolist()
    for i, row in enumerate(out.traces):
        for j, column in enumerate(out.trace_columns):
            as_json = column.to_dict()
            rows = as_json["rows"]
            expected = (
                as_json["entries"][rows.index(i)] if i in rows else as_json["entry"]
            )
            assert row[j] == expected


@PROPERTY
@given(probs=probability_rows(), policy=policies(), ctx=request_contexts())
def test_a_blacklisted_label_is_never_the_answer(probs, policy, ctx) -> None:
    out = GuardrailPipeline(policy, make_meta()).run(
        inside(len(probs)), fixed(probs), ctx
    )
    banned = set(policy.blacklist.global_)
    if ctx.context is not None:
        banned |= set(policy.blacklist.per_context.get(ctx.context, []))
    assert not banned & set(out.labels)
    if banned == set(LABELS):
        assert out.abstained.all() and set(out.reasons) == {"blacklisted"}


@PROPERTY
@given(probs=probability_rows())
def test_adjusting_with_the_training_priors_changes_nothing(probs) -> None:
    adjusted, fell_back = adjust(probs.copy(), TRAIN / TRAIN)
    np.testing.assert_allclose(adjusted, probs, rtol=0, atol=1e-12)
    assert not fell_back.any()
    # Through the pipeline: no context, or explicit priors equal to training.
    pipeline = GuardrailPipeline(make_policy(), make_meta())
    for ctx in (RequestContext(), RequestContext(priors=dict(TRAIN_PRIORS))):
        out = pipeline.run(inside(len(probs)), fixed(probs), ctx)
        np.testing.assert_allclose(out.probabilities, probs, rtol=0, atol=1e-12)
        assert out.traces[0][2]["acted"] is False


@PROPERTY
@given(probs=probability_rows(), data=st.data())
def test_priors_adjustment_is_bayes_rule(probs, data) -> None:
    deploy = prepare_priors(
        np.array(list(priors_dict(data.draw, allow_zero=False).values())),
        floor=0.0,
        smoothing=0.0,
        allow_hard_zeros=False,
    )
    adjusted, _ = adjust(probs, deploy / TRAIN)
    expected = probs * deploy / TRAIN
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(adjusted, expected, rtol=1e-9, atol=1e-15)
    assert _is_distribution(adjusted)


@PROPERTY
@given(data=st.data(), floor=st.sampled_from([0.001, 0.01, 0.1]))
def test_floored_priors_have_no_zeros_and_sum_to_one(data, floor) -> None:
    raw = np.array(list(priors_dict(data.draw).values()))
    priors = prepare_priors(raw, floor=floor, smoothing=0.0, allow_hard_zeros=False)
    assert priors.min() > 0 and np.isclose(priors.sum(), 1.0)
    # Renormalising after the floor can only lower it by the floored mass.
    assert priors.min() >= floor / (1 + floor * len(raw))


@PROPERTY
@given(data=st.data())
def test_hard_zeros_stay_zero_only_when_allowed(data) -> None:
    raw = np.array(list(priors_dict(data.draw).values()))
    priors = prepare_priors(raw, floor=0.01, smoothing=0.1, allow_hard_zeros=True)
    np.testing.assert_array_equal(priors == 0, raw == 0)
    assert np.isclose(priors.sum(), 1.0)


@PROPERTY
@given(probs=probability_rows())
def test_a_row_whose_likely_labels_all_have_zero_prior_keeps_its_probabilities(
    probs,
) -> None:
    probs = np.column_stack([probs[:, :2], np.zeros(len(probs))])
    probs[:, 0] += (probs.sum(axis=1) == 0).astype(float)
    probs /= probs.sum(axis=1, keepdims=True)
    policy = make_policy(priors={"allow_hard_zeros": True, "floor": 0.0})
    pipeline = GuardrailPipeline(policy, make_meta())
    ctx = RequestContext(priors={"cat": 0.0, "dog": 0.0, "fox": 1.0})
    out = pipeline.run(inside(len(probs)), fixed(probs), ctx)
    np.testing.assert_allclose(out.probabilities, probs, atol=1e-12)
    assert all("fallback" in trace[2] for trace in out.traces)


@PROPERTY
@given(probs=probability_rows())
def test_temperature_one_is_the_identity(probs) -> None:
    np.testing.assert_allclose(scale(probs, 1.0), probs, rtol=0, atol=1e-12)


@PROPERTY
@given(probs=probability_rows(), t=st.floats(0.05, 20.0))
def test_temperature_keeps_distributions_zeros_and_the_top_label(probs, t) -> None:
    scaled = scale(probs, t)
    assert _is_distribution(scaled)
    np.testing.assert_array_equal(scaled == 0, probs == 0)
    # Every label tied for the top before is still at the top after.
    top_before = probs == probs.max(axis=1, keepdims=True)
    top_after = scaled == scaled.max(axis=1, keepdims=True)
    assert top_after[top_before].all()
    if t > 1:  # hotter: never more confident
        assert (scaled.max(axis=1) <= probs.max(axis=1) + 1e-12).all()


@PROPERTY
@given(probs=probability_rows())
def test_zero_one_costs_choose_the_argmax(probs) -> None:
    zero_one = {y: {z: float(y != z) for z in LABELS} for y in LABELS}
    plain = GuardrailPipeline(make_policy(), make_meta())
    costed = GuardrailPipeline(
        make_policy(decision={"cost_matrix": zero_one}), make_meta()
    )
    a = plain.run(inside(len(probs)), fixed(probs), RequestContext())
    b = costed.run(inside(len(probs)), fixed(probs), RequestContext())
    # Ties may break either way; the chosen label's probability is the maximum.
    assert None not in b.labels
    idx = [LABELS.index(str(label)) for label in b.labels]
    chosen = probs[np.arange(len(probs)), idx]
    np.testing.assert_allclose(chosen, probs.max(axis=1), atol=1e-12)
    unique_top = (probs == probs.max(axis=1, keepdims=True)).sum(axis=1) == 1
    assert [x for x, u in zip(a.labels, unique_top, strict=True) if u] == [
        x for x, u in zip(b.labels, unique_top, strict=True) if u
    ]


def test_cost_matrix_prefers_the_cheaper_mistake() -> None:
    probs = np.array([[0.6, 0.0, 0.4]])  # cat more likely than fox
    costs = {"fox": {"cat": 10.0}}  # but calling a fox a cat is expensive
    pipeline = GuardrailPipeline(
        make_policy(decision={"cost_matrix": costs}), make_meta()
    )
    out = pipeline.run(inside(1), fixed(probs), RequestContext())
    assert out.labels == ["fox"]
    entry = out.traces[0][-1]
    assert entry["acted"] and entry["most_probable"] == "cat"
    assert entry["expected_cost"] == 0.6  # 0.6 * cost[cat][fox] = 0.6 * 1
    matrix = cost_matrix(costs, LABELS)
    assert matrix is not None
    np.testing.assert_array_equal(matrix[2], [10.0, 1.0, 0.0])
