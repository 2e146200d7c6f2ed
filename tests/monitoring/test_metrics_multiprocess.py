"""Two processes write ServiceMetrics into one multiprocess directory; BentoML's own
`/metrics` generator (PrometheusClient.generate_latest) reads them back summed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.servers import ROOT

WRITER = """
import sys
from guardrails.registry import ABSTAIN_REASONS, STAGE_NAMES
from monitoring.metrics import ServiceMetrics

rows, version, queue = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
m = ServiceMetrics(
    labels=["Adelie", "Chinstrap", "Gentoo"],
    stages=["inference"],
    guardrail_stages=STAGE_NAMES,
    abstain_reasons=ABSTAIN_REASONS,
)
assert m.multiprocess, "prometheus_client did not see PROMETHEUS_MULTIPROC_DIR"
for _ in range(rows):
    m.observe_prediction("predict", 1, [1, 0, 0], total_seconds=0.0004,
                         stage_seconds={"inference": 0.00003})
m.set_model_version("penguins", version)
m.set_log_queue_rows(queue)
m.set_estimated_priors({"Adelie": 0.1 * rows})
"""

READER = """
import os
from bentoml._internal.server.metrics.prometheus import PrometheusClient

client = PrometheusClient()
client._pid = os.getpid()  # its __del__ marks this (reader) process dead
print(client.generate_latest().decode())
"""


def _run(code: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_two_worker_processes_are_aggregated_by_bentomls_collector(
    tmp_path: Path,
) -> None:
    multiproc = tmp_path / "prometheus_multiproc"
    multiproc.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
           "PYTHONPATH": str(ROOT), "BENTOML_HOME": str(tmp_path / "bentoml"),
           "BENTOML_DO_NOT_TRACK": "true"}  # fmt: skip
    _run(WRITER, env, "3", "v1", "10")
    _run(WRITER, env, "5", "v1", "7")
    assert len(list(multiproc.glob("*.db"))) >= 2

    samples = _samples(_run(READER, env))

    assert samples[("flywheel_predictions_total", (("label", "Adelie"),))] == 8
    count = ("flywheel_request_duration_seconds_count", (("endpoint", "predict"),))
    assert samples[count] == 8
    stage = (("endpoint", "predict"), ("le", "5e-05"), ("stage", "inference"))
    assert samples[("flywheel_stage_duration_seconds_bucket", stage)] == 8
    # livesum: both workers' queues; livemax: a version served is 1, not 2.
    assert samples[("flywheel_prediction_log_queue_rows", ())] == 17
    info = (("pack", "penguins"), ("provider", "unknown"), ("version", "v1"))
    assert samples[("flywheel_model_info", info)] == 1
    # livemostrecent: the later writer's estimate, and no per-pid series.
    assert samples[("flywheel_estimated_prior", (("label", "Adelie"),))] == 0.5
    assert not any(dict(labels).get("pid") for _, labels in samples)
