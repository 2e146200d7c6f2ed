"""ServiceMetrics on a fresh registry: values move, label cardinality stays bounded,
versions swap cleanly, drift results set the gauges."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from guardrails.registry import ABSTAIN_REASONS, STAGE_NAMES
from monitoring.drift import ColumnDrift, DriftResult
from monitoring.drift_metrics import DriftMetrics
from monitoring.metrics import OTHER, ServiceMetrics
from service.dataplane import PHASES

LABELS = ["Adelie", "Chinstrap", "Gentoo"]
FEATURES = ["bill_length_mm", "bill_depth_mm"]


def make(**kw: object) -> tuple[ServiceMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    kw.setdefault("labels", LABELS)
    kw.setdefault("stages", PHASES)
    kw.setdefault("guardrail_stages", STAGE_NAMES)
    kw.setdefault("abstain_reasons", ABSTAIN_REASONS)
    return ServiceMetrics(registry, **kw), registry  # type: ignore[arg-type]


def make_drift() -> tuple[DriftMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return DriftMetrics(registry, labels=LABELS, features=FEATURES), registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_prediction_counters_follow_observed_rows() -> None:
    m, r = make()
    m.observe_prediction(
        "predict", 5, {"Adelie": 3, "Gentoo": 1}, {"low_confidence": 1},
        {"validation": 0.0002, "inference": 0.00004},
        total_seconds=0.0009, guardrail_actions={"priors": 5, "blacklist": 0},
    )  # fmt: skip
    assert value(r, "flywheel_predictions_total", label="Adelie") == 3
    assert value(r, "flywheel_predictions_total", label="Gentoo") == 1
    assert value(r, "flywheel_predictions_total", label="Chinstrap") == 0
    assert value(r, "flywheel_abstentions_total", reason="low_confidence") == 1
    assert value(r, "flywheel_guardrail_actions_total", stage="priors") == 5
    assert value(r, "flywheel_guardrail_actions_total", stage="blacklist") == 0
    assert value(r, "flywheel_batch_rows_sum", endpoint="predict") == 5
    assert value(r, "flywheel_request_duration_seconds_count", endpoint="predict") == 1
    stage = {"endpoint": "predict", "stage": "inference"}
    assert value(r, "flywheel_stage_duration_seconds_sum", **stage) == 0.00004


def test_label_counts_may_be_aligned_with_the_pack_labels() -> None:
    m, r = make()
    m.observe_prediction("predict", 6, [1, 0, 5])
    assert value(r, "flywheel_predictions_total", label="Adelie") == 1
    assert value(r, "flywheel_predictions_total", label="Gentoo") == 5


def test_latency_buckets_separate_sub_millisecond_requests() -> None:
    m, r = make()
    m.observe_prediction("predict", 1, {"Adelie": 1}, total_seconds=0.0003)
    bucket = "flywheel_request_duration_seconds_bucket"
    assert value(r, bucket, endpoint="predict", le="0.00025") == 0
    assert value(r, bucket, endpoint="predict", le="0.0005") == 1
    stage = "flywheel_stage_duration_seconds_bucket"
    m.observe_prediction("predict", 1, {}, stage_seconds={"inference": 0.00002})
    assert value(r, stage, endpoint="predict", stage="inference", le="1e-05") == 0
    assert value(r, stage, endpoint="predict", stage="inference", le="2.5e-05") == 1


def _series_per_label(registry: CollectorRegistry) -> dict[tuple[str, str], set[str]]:
    seen: dict[tuple[str, str], set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            for key, val in sample.labels.items():
                if key != "le":
                    seen.setdefault((family.name, key), set()).add(val)
    return seen


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=30))
def test_unknown_label_values_are_counted_as_other(junk: list[str]) -> None:
    m, r = make(report_categories=["blurry"])
    for word in junk:
        m.observe_prediction(
            word, 1, {word: 1}, {word: 1}, {word: 0.001}, guardrail_actions={word: 1}
        )
        m.observe_report([word])
        m.set_estimated_priors({word: 0.5})
    allowed = {
        ("flywheel_predictions", "label"): {*LABELS, OTHER},
        ("flywheel_abstentions", "reason"): {*ABSTAIN_REASONS, OTHER},
        ("flywheel_stage_duration_seconds", "stage"): {*PHASES, OTHER},
        ("flywheel_stage_duration_seconds", "endpoint"): 3,
        ("flywheel_request_duration_seconds", "endpoint"): 3,
        ("flywheel_report_categories", "category"): {"blurry", "none", OTHER},
        ("flywheel_estimated_prior", "label"): {*LABELS, OTHER},
    }
    seen = _series_per_label(r)
    for key, bound in allowed.items():
        if isinstance(bound, set):
            assert seen[key] <= bound, key
        else:
            assert len(seen[key]) <= bound, (key, seen[key])
    junk_only = {w for w in junk if w not in {*LABELS, "predict", "report", OTHER}}
    assert not junk_only & seen[("flywheel_predictions", "label")]


def test_model_version_swap_zeroes_the_previous_version() -> None:
    m, r = make()
    m.set_model_version("penguins", "v1", "CPUExecutionProvider")
    m.set_model_version("penguins", "v2", "CPUExecutionProvider")
    cpu = {"provider": "CPUExecutionProvider"}
    assert value(r, "flywheel_model_info", pack="penguins", version="v1", **cpu) == 0
    assert value(r, "flywheel_model_info", pack="penguins", version="v2", **cpu) == 1
    m.set_policy_version("p1")
    m.set_policy_version("p2")
    assert value(r, "flywheel_policy_info", version="p1") == 0
    assert value(r, "flywheel_policy_info", version="p2") == 1


def test_log_queue_and_drops_are_exposed() -> None:
    m, r = make()
    m.set_log_queue_rows(42)
    m.add_log_dropped(3)
    m.add_log_written(1000)
    assert value(r, "flywheel_prediction_log_queue_rows") == 42
    assert value(r, "flywheel_prediction_log_dropped_rows_total") == 3
    assert value(r, "flywheel_prediction_log_written_rows_total") == 1000


def _drift(skipped: bool = False) -> DriftResult:
    now = datetime.now(UTC)
    common = {
        "model_version": "v1", "window_rows": 300, "reference_rows": 200,
        "min_window_rows": 100, "alpha": 0.05, "computed_at": now,
    }  # fmt: skip
    if skipped:
        return DriftResult(skipped=True, reason="too few rows", **common)  # type: ignore[arg-type]
    return DriftResult(
        skipped=False, reason=None, dataset_drift=True, drift_share=0.5,
        drifted_columns=1,
        features={
            "bill_length_mm": ColumnDrift(1e-9, "ks", 0.01, True, 0.4),
            "bill_depth_mm": ColumnDrift(0.8, "ks", 0.01, False, 0.05),
        },
        outputs={
            "proba_Gentoo": ColumnDrift(0.3, "ks", 0.01, False, 0.1, "output"),
            "predicted_label": ColumnDrift(0.001, "chisquare", 0.01, True, 9.0,
                                           "output"),
        },
        prediction_drift=ColumnDrift(0.001, "chisquare", 0.01, True, 9.0, "output"),
        per_test_alpha=0.01,
        label_share_live={"Gentoo": 1.0},
        label_share_reference={"Adelie": 0.5, "Gentoo": 0.5},
        **common,  # type: ignore[arg-type]
    )  # fmt: skip


def test_drift_result_sets_the_drift_gauges() -> None:
    m, r = make_drift()
    m.observe_drift(_drift(), seconds=0.7)
    assert value(r, "flywheel_drift_share") == 0.5
    assert value(r, "flywheel_drift_detected") == 1
    assert value(r, "flywheel_drift_feature_score", feature="bill_depth_mm") == 0.8
    assert value(r, "flywheel_prediction_drift_score") == 0.001
    p_value, drifted = (
        "flywheel_drift_feature_p_value",
        "flywheel_drift_feature_drifted",
    )
    assert value(r, p_value, feature="bill_length_mm") == 1e-9
    assert value(r, drifted, feature="bill_length_mm") == 1
    assert value(r, drifted, feature="bill_depth_mm") == 0
    assert value(r, "flywheel_drift_output_p_value", output="proba_Gentoo") == 0.3
    assert value(r, "flywheel_drift_output_drifted", output="proba_Gentoo") == 0
    assert value(r, "flywheel_drift_output_drifted", output="predicted_label") == 1
    assert value(r, "flywheel_drift_test_p_value_threshold") == 0.01
    share = "flywheel_drift_label_share"
    assert value(r, share, window="live", label="Gentoo") == 1.0
    assert value(r, share, window="live", label="Adelie") == 0.0
    assert value(r, share, window="reference", label="Adelie") == 0.5
    assert value(r, "flywheel_drift_runs_total", outcome="completed") == 1


def test_skipped_drift_run_reads_as_unknown_not_as_no_drift() -> None:
    m, r = make_drift()
    m.observe_drift(_drift())
    m.observe_drift(_drift(skipped=True))
    assert math.isnan(value(r, "flywheel_drift_share") or 0.0)
    assert math.isnan(value(r, "flywheel_drift_detected") or 0.0)
    assert value(r, "flywheel_drift_runs_total", outcome="skipped") == 1
    assert value(r, "flywheel_drift_window_rows") == 300


def test_every_gauge_declares_an_aggregating_multiprocess_mode() -> None:
    gauges = [
        c
        for _, r in (make(), make_drift())
        for c in r._collector_to_names
        if isinstance(c, Gauge)
    ]
    assert len(gauges) >= 10
    for gauge in gauges:
        # "all"/"liveall" would add a pid label: one series per worker.
        assert gauge._multiprocess_mode not in ("all", "liveall"), gauge._name


def test_metric_names_follow_prometheus_conventions() -> None:
    m, r = make()
    m.observe_prediction("predict", 1, {"Adelie": 1}, total_seconds=0.001)
    text = generate_latest(r).decode()
    for family in text_string_to_metric_families(text):
        assert re.fullmatch(r"flywheel_[a-z0-9_]+", family.name), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram" and "duration" in family.name:
            assert family.name.endswith("_seconds")


def test_two_instances_on_separate_registries_do_not_collide() -> None:
    a, ra = make()
    _, rb = make()
    a.observe_report(["x"])
    assert value(ra, "flywheel_reports_total") == 1
    assert value(rb, "flywheel_reports_total") == 0


def test_every_guardrail_stage_and_reason_is_counted_under_its_own_name(
    default_pack: Path,
) -> None:
    """The service's metrics take their label sets from the stage registry: no
    stage's actions and no abstention reason may land in `other`."""
    from packs.loader import ModelPack
    from service.wiring import build_metrics

    pack = ModelPack.load(default_pack, providers=["CPUExecutionProvider"])
    served = SimpleNamespace(meta=pack.metadata)
    m = build_metrics(served)  # type: ignore[arg-type]
    r = m.registry
    m.observe_prediction(
        "predict",
        len(STAGE_NAMES),
        {},
        dict.fromkeys(ABSTAIN_REASONS, 1),
        guardrail_actions=dict.fromkeys(STAGE_NAMES, 1),
    )
    for stage in STAGE_NAMES:
        assert value(r, "flywheel_guardrail_actions_total", stage=stage) == 1, stage
    for reason in ABSTAIN_REASONS:
        assert value(r, "flywheel_abstentions_total", reason=reason) == 1, reason
    assert value(r, "flywheel_guardrail_actions_total", stage=OTHER) == 0
    assert value(r, "flywheel_abstentions_total", reason=OTHER) == 0
    assert "output_bounds" in STAGE_NAMES
