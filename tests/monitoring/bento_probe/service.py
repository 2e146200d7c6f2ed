"""A two-worker BentoML service that records ServiceMetrics, for the multi-worker
metrics test (tests/monitoring/test_bento_workers_metrics.py)."""

from __future__ import annotations

import os

import bentoml

from guardrails.registry import ABSTAIN_REASONS, STAGE_NAMES
from monitoring.metrics import ServiceMetrics


@bentoml.service(workers=2)
class MetricsProbe:
    def __init__(self) -> None:
        # Built in the worker, after BentoML set PROMETHEUS_MULTIPROC_DIR.
        self.metrics = ServiceMetrics(
            labels=["Adelie", "Chinstrap", "Gentoo"],
            stages=["inference"],
            guardrail_stages=STAGE_NAMES,
            abstain_reasons=ABSTAIN_REASONS,
        )
        self.metrics.set_model_version("probe", "v1")

    @bentoml.api
    def predict(self, rows: int = 1) -> dict:
        self.metrics.observe_prediction(
            "predict", rows, [rows, 0, 0], total_seconds=0.0005,
            stage_seconds={"inference": 0.00002},
        )  # fmt: skip
        return {"pid": os.getpid(), "multiprocess": self.metrics.multiprocess}
