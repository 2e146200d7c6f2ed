"""Buffered hot-path metrics end up exactly where unbuffered ones would."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from guardrails.registry import ABSTAIN_REASONS, STAGE_NAMES
from monitoring.metrics import ServiceMetrics, observe_counts
from monitoring.metrics_buffer import MetricsBuffer, observe_many

LABELS = ["Adelie", "Chinstrap", "Gentoo"]
STAGES = ("validation", "inference", "guardrails", "logging")


def metrics(registry: CollectorRegistry) -> ServiceMetrics:
    return ServiceMetrics(
        registry,
        labels=LABELS,
        stages=STAGES,
        guardrail_stages=STAGE_NAMES,
        abstain_reasons=ABSTAIN_REASONS,
    )


def samples(
    registry: CollectorRegistry,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=50))
def test_observe_many_matches_one_observe_per_value(values: list[float]) -> None:
    buckets = (0.001, 0.01, 0.1, 1.0, 5.0)
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h", "h", buckets=buckets, registry=one)
    h2 = Histogram("h", "h", buckets=buckets, registry=many)
    for v in values:
        h1.observe(v)
    observe_many(h2, values)
    a, b = samples(one), samples(many)
    assert a.keys() == b.keys()
    for key in a:
        assert np.isclose(a[key], b[key]), key


@settings(max_examples=100, derandomize=True, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=20), max_size=12))
def test_observe_counts_matches_one_observe_per_row(counts: list[int]) -> None:
    buckets = (0.0, 1.0, 2.0, 3.0, 5.0)
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h", "h", buckets=buckets, registry=one)
    h2 = Histogram("h", "h", buckets=buckets, registry=many)
    for size, n in enumerate(counts):
        for _ in range(n):
            h1.observe(size)
    observe_counts(h2, counts)
    assert samples(one) == samples(many)


def test_buffer_applies_on_flush_what_direct_calls_apply_at_once() -> None:
    direct_reg, buffered_reg = CollectorRegistry(), CollectorRegistry()
    direct = metrics(direct_reg)
    buffer = MetricsBuffer(metrics(buffered_reg))
    calls = [
        (
            "predict",
            1,
            {"Adelie": 1},
            None,
            {"inference": 5e-6, "validation": 2e-5},
            1e-4,
            {"priors": 1},
            [0, 1],  # rows by set size: one set of 1 label
        ),
        (
            "predict",
            3,
            {"Gentoo": 2},
            {"low_confidence": 1},
            {"guardrails": 3e-5},
            2e-3,
            None,
            [1, 0, 1, 1],  # sets of 0, 2 and 3 labels
        ),
        ("predict", 2, {"Chinstrap": 2}, None, None, None, {"blacklist": 2}, None),
    ]
    for endpoint, rows, labels, reasons, stages, total, actions, sizes in calls:
        kw = {
            "total_seconds": total,
            "guardrail_actions": actions,
            "prediction_set_size_counts": sizes,
        }
        direct.observe_prediction(endpoint, rows, labels, reasons, stages, **kw)
        buffer.observe_prediction(endpoint, rows, labels, reasons, stages, **kw)
    before = samples(buffered_reg)
    assert before[("flywheel_predictions_total", (("label", "Adelie"),))] == 0
    assert buffer.flush() == 3
    assert samples(buffered_reg) == samples(direct_reg)
    # Set sizes 1, 0, 2, 3: one empty set, two of at most 1 label, all 4 within 3.
    after = samples(buffered_reg)
    assert after[("flywheel_prediction_set_size_bucket", (("le", "0.0"),))] == 1
    assert after[("flywheel_prediction_set_size_bucket", (("le", "1.0"),))] == 2
    assert after[("flywheel_prediction_set_size_count", ())] == 4
    assert buffer.flush() == 0


def test_abstentions_are_not_counted_as_a_label() -> None:
    reg = CollectorRegistry()
    buffer = MetricsBuffer(metrics(reg))
    buffer.observe_prediction("predict", 2, {"Adelie": 1, None: 1}, {"blacklisted": 1})  # type: ignore[dict-item]
    buffer.flush()
    got = samples(reg)
    assert got[("flywheel_predictions_total", (("label", "other"),))] == 0
    assert got[("flywheel_abstentions_total", (("reason", "blacklisted"),))] == 1


def test_stop_flushes_what_is_pending() -> None:
    reg = CollectorRegistry()
    buffer = MetricsBuffer(metrics(reg), flush_interval_s=60).start()
    buffer.observe_prediction("predict", 1, {"Gentoo": 1})
    buffer.stop()
    assert samples(reg)[("flywheel_predictions_total", (("label", "Gentoo"),))] == 1
