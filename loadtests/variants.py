"""Experiments: the full service's own app and worker, one thing changed at a time.

Each mounts exactly what `service/service.py` mounts (`service.app.create_app` with
a `Worker` from `service.wiring.build_worker`, GC frozen, access log off, API
paths excluded from tracing, one worker), so a difference in throughput is the cost
of the one thing changed. They measure what could be configured away or made
cheaper, without touching `service/`:

    FullTraced          BentoML's OpenTelemetry middleware on every request, as
                        before `serving.trace_requests` existed (what it costs)
    FullNoBentoMetrics  `metrics.enabled: false`: no traffic-metrics middleware
                        (BentoML then serves no /metrics, so the service would have
                        to expose its own registry)
    FullNoLog           the prediction log detached
    FullNoOurMetrics    our Prometheus metrics detached
    make_full_app       the same FastAPI app on plain uvicorn, no BentoML at all:
                        `uvicorn --factory loadtests.variants:make_full_app`
"""

from __future__ import annotations

import gc
from typing import Any

import bentoml
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings
from service.wiring import build_worker

settings = Settings()
# The paths service/service.py keeps out of tracing unless serving.trace_requests.
UNTRACED = ["/predict", "/report", "/admin", "/info", "/priors"]


def _attach(api: FastAPI, *, log: bool = True, our_metrics: bool = True) -> None:
    api.state.worker = build_worker(
        settings, log_predictions=log, record_metrics=our_metrics
    )
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _variant(
    name: str, *, log: bool = True, our_metrics: bool = True, **config: Any
) -> Any:
    """A BentoML service class mounting a fresh copy of the app."""
    api = create_app(max_body_bytes=settings.serving.max_body_bytes)

    class Variant:
        def __init__(self) -> None:
            _attach(api, log=log, our_metrics=our_metrics)

        @bentoml.on_shutdown
        def shutdown(self) -> None:
            api.state.worker.close()

    Variant.__name__ = Variant.__qualname__ = name
    config.setdefault("tracing", {"excluded_urls": UNTRACED})
    return bentoml.service(
        name=name.lower(),
        workers=settings.serving.workers,
        traffic={"timeout": 30},
        logging={"access": {"enabled": False}},
        **config,
    )(bentoml.asgi_app(api, path="/")(Variant))


FullTraced = _variant("FullTraced", tracing={})
FullNoBentoMetrics = _variant("FullNoBentoMetrics", metrics={"enabled": False})
FullNoLog = _variant("FullNoLog", log=False)
FullNoOurMetrics = _variant("FullNoOurMetrics", our_metrics=False)


def make_full_app() -> FastAPI:
    """The full app on plain uvicorn (metrics in-process, no BentoML)."""
    app = create_app(max_body_bytes=settings.serving.max_body_bytes)

    @app.get("/readyz")
    async def readyz() -> dict[str, bool]:
        return {"ready": True}

    _attach(app)
    return app
