"""End to end: a real Prometheus server scrapes the real service, and a PromQL
query returns the request count after traffic."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.monitoring.conftest import StartPrometheus, wait_for_value

pytestmark = pytest.mark.integration

PENGUIN = {
    "bill_length_mm": 39.1,
    "bill_depth_mm": 18.7,
    "flipper_length_mm": 181.0,
    "body_mass_g": 3750.0,
}


def _send(url: str, requests: int) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(requests):
            answer = client.post("/predict", json={"instances": [PENGUIN]})
            assert answer.status_code == 200, answer.text


def test_prometheus_scrapes_the_request_count_from_the_service(
    running_service: Any, start_prometheus: StartPrometheus
) -> None:
    url = getattr(running_service, "url", running_service)
    prometheus = start_prometheus([str(url).removeprefix("http://")])
    wait_for_value(prometheus, 'up{job="inference-service"}')
    _send(url, 10)
    # BentoML pre-creates zero series; wait until all ten requests are counted.
    wait_for_value(prometheus, "sum(bentoml_service_request_total)", above=9)
    # The service's own metrics (monitoring.metrics) are scraped and move too.
    wait_for_value(prometheus, "sum(flywheel_predictions_total)", above=9)
    wait_for_value(
        prometheus, 'sum(flywheel_request_duration_seconds_count{endpoint="predict"})'
    )
