"""The Grafana dashboard: the panels on-call needs are there, and every query
parses in a real Prometheus."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from monitoring.prometheus_server import HERE
from tests.monitoring.conftest import StartPrometheus, promql

DASHBOARD = HERE / "grafana" / "inference-service.json"
PROVISIONING = HERE / "grafana" / "provisioning"
#: Panels that show replicas one by one on purpose.
PER_REPLICA_PANELS = {"Requests /s per replica"}


def queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]


def test_dashboard_covers_what_on_call_needs() -> None:
    board = json.loads(DASHBOARD.read_text())
    text = " ".join(queries())
    for needed in [
        "histogram_quantile(0.99", "histogram_quantile(0.95",
        "histogram_quantile(0.5", "bentoml_service_request_total",
        'http_response_code=~"5.."', "flywheel_guardrail_actions_total",
        "flywheel_abstentions_total", "flywheel_reports_total",
        "flywheel_drift_share", "flywheel_prediction_log_refused_rows_total",
        "flywheel_estimated_accuracy", "flywheel_heldout_accuracy",
        "flywheel_prediction_set_size_bucket", "flywheel_audit_accuracy",
    ]:  # fmt: skip
        assert needed in text, needed
    assert board["uid"] == "inference-service"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.integration
def test_every_dashboard_query_parses_in_prometheus(
    start_prometheus: StartPrometheus,
) -> None:
    prometheus = start_prometheus(["127.0.0.1:9"])  # nothing listens: no data
    for expr in queries():
        # Grafana's variables, replaced as Grafana would.
        expr = expr.replace("$__rate_interval", "1m")
        expr = re.sub(r"\$endpoint", ".*", expr)
        promql(prometheus, expr)


def test_every_panel_aggregates_over_replicas() -> None:
    """Each query sums (or averages, or takes the latest of) what every replica
    reports: a bare selector would draw one line per instance."""
    board = json.loads(DASHBOARD.read_text())
    aggregated = re.compile(r"^\(?(sum|avg|max|min|count|histogram_quantile)\b")
    for panel in board["panels"]:
        if panel["title"] in PER_REPLICA_PANELS:
            continue
        for target in panel.get("targets", []):
            assert aggregated.match(target["expr"]), (panel["title"], target["expr"])


def test_drift_panels_show_the_replica_that_ran_last() -> None:
    # Drift runs in one replica per window: another's gauges are older results.
    drift = [q for q in queries() if "flywheel_drift_" in q and "runs_total" not in q]
    assert drift
    for expr in drift:
        assert "flywheel_drift_last_run_timestamp_seconds" in expr, expr


def test_provisioning_files_point_at_prometheus_and_the_dashboard() -> None:
    sources = yaml.safe_load(
        (PROVISIONING / "datasources" / "prometheus.yaml").read_text()
    )
    assert sources["apiVersion"] == 1
    assert [d["type"] for d in sources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load(
        (PROVISIONING / "dashboards" / "flywheel.yaml").read_text()
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
