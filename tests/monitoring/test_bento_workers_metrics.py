"""A real `bentoml serve` with two workers: ServiceMetrics written by both workers
appear summed on /metrics, and a real Prometheus scraping it sees them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring.conftest import StartPrometheus, wait_for_value
from tests.servers import ROOT, free_port

pytestmark = pytest.mark.integration
PROBE_DIR = Path(__file__).parent / "bento_probe"


@pytest.fixture(scope="module")
def probe_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("bentoml_home")
    port = free_port()
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (home / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", "service:MetricsProbe",
         "--working-dir", str(PROBE_DIR), "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (home / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (home / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _send(url: str, requests: int, rows: int) -> set[int]:
    pids = set()
    for _ in range(requests):
        # A fresh connection each time, so the kernel spreads them over workers.
        with httpx.Client(timeout=10) as client:
            answer = client.post(f"{url}/predict", json={"rows": rows})
        assert answer.status_code == 200, answer.text
        assert answer.json()["multiprocess"] is True
        pids.add(answer.json()["pid"])
    return pids


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_from_both_workers_are_summed_on_metrics(probe_url: str) -> None:
    before = _scrape(probe_url).get(
        ("flywheel_predictions_total", (("label", "Adelie"),)), 0.0
    )
    pids = _send(probe_url, 40, rows=3)
    assert len(pids) == 2, f"all requests went to one worker: {pids}"
    for _ in range(4):  # whichever worker answers /metrics, the total is the same
        samples = _scrape(probe_url)
        adelie = samples[("flywheel_predictions_total", (("label", "Adelie"),))]
        assert adelie - before == 120
        info = (("pack", "probe"), ("provider", "unknown"), ("version", "v1"))
        assert samples[("flywheel_model_info", info)] == 1


def test_prometheus_scrapes_the_service_metrics(
    probe_url: str, start_prometheus: StartPrometheus
) -> None:
    prometheus = start_prometheus([probe_url.removeprefix("http://")])
    _send(probe_url, 5, rows=1)
    wait_for_value(prometheus, "sum(bentoml_service_request_total)")
    wait_for_value(prometheus, 'sum(flywheel_predictions_total{label="Adelie"})')
    # rate() needs the counters to move between scrapes.
    _send(probe_url, 5, rows=1)
    p99 = wait_for_value(
        prometheus,
        "histogram_quantile(0.99, sum by (le) "
        "(rate(flywheel_request_duration_seconds_bucket[1m])))",
    )
    assert p99 <= 0.00075  # every observation was 0.5 ms
