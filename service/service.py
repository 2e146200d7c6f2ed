"""The BentoML service: `bentoml serve service.service:InferenceService`.

BentoML runs the workers, health probes (`/livez`, `/readyz`), `/metrics`
(Prometheus, aggregated across workers) and graceful shutdown; our FastAPI app
(`service/app.py`) is mounted at `/` and answers the API. Start it through
`python -m service.cli serve` (or `make serve`), which sets BentoML's home and
tracking switches inside the project's data directory.
"""

from __future__ import annotations

import gc
import logging
import os

import bentoml

from common.errors import ServiceError
from service.app import create_app
from service.header_limits import HeaderLimits
from service.parent_death import die_with_parent
from service.settings import Settings
from service.startup_failure import exit_nonzero_after_failed_start, stop_server
from service.wiring import build_worker

settings = Settings()
# In the arbiter (which imports this module too): a worker's failed start makes
# `bentoml serve` exit 2 rather than 0.
exit_nonzero_after_failed_start()
# uvicorn rewrites the client address from X-Forwarded-For when the peer is in
# FORWARDED_ALLOW_IPS (default: loopback), read when BentoML's worker builds its
# uvicorn config, after importing this module. Only the configured proxies count.
os.environ["FORWARDED_ALLOW_IPS"] = settings.http.trusted_proxies
api = create_app(max_body_bytes=settings.serving.max_body_bytes)
log = logging.getLogger(__name__)
# BentoML always installs OpenTelemetry's ASGI middleware; excluded URLs skip it.
UNTRACED = ["/predict", "/report", "/admin", "/info", "/priors"]


@bentoml.service(
    name="flywheel",
    workers=settings.serving.workers,
    traffic={"timeout": settings.serving.request_timeout_s},
    logging={"access": {"enabled": False}},
    tracing={} if settings.serving.trace_requests else {"excluded_urls": UNTRACED},
)
@bentoml.asgi_app(api, path="/")
class InferenceService:
    def __init__(self) -> None:
        die_with_parent()  # never outlive the arbiter, nor keep its port
        # Runs once per worker: a broken pack or policy raises here and stops the
        # whole server with its one-line message (see packs.errors,
        # guardrails.errors) instead of BentoML restarting the worker forever.
        worker = bentoml.server_context.worker_index
        try:
            self.worker = build_worker(settings, schedule_drift=worker in (None, 1))
        except ServiceError as exc:
            stop_server(exc.message)
        api.state.worker = self.worker
        if settings.serving.freeze_gc:
            # Start-up objects never die; keeping them out of GC passes cuts the
            # 100-300 ms pauses measured at high concurrency.
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 50, 100)

    def __is_ready__(self) -> bool:
        return getattr(api.state, "worker", None) is not None

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.worker.close()


# On the BentoML app rather than ours, so its own routes (probes, /metrics) are
# covered too. (mypy sees the class, not the BentoML service it became.)
InferenceService.add_asgi_middleware(  # type: ignore[attr-defined]
    HeaderLimits,
    max_header_bytes=settings.http.max_header_bytes,
    max_headers=settings.http.max_headers,
)
