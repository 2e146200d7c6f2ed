"""The Grafana dashboard: the panels on-call needs are there, and every query
parses in a real Prometheus."""

from __future__ import annotations

import json
import re

import pytest

from monitoring.prometheus_server import HERE
from tests.monitoring.conftest import StartPrometheus, promql

DASHBOARD = HERE / "grafana" / "inference-service.json"


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
        "flywheel_drift_share", "flywheel_prediction_log_dropped_rows_total",
        "flywheel_estimated_accuracy", "flywheel_heldout_accuracy",
        "flywheel_prediction_set_size_bucket",
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
