"""The FastAPI application: thin routes that decode, call the data plane, encode.

It is mounted at `/` inside the BentoML service (`service/service.py`), which adds
health probes (`/livez`, `/readyz`), `/metrics`, workers and lifecycle. Each worker
attaches its `Worker` (`service.wiring.build_worker`) to `app.state.worker` at
start-up.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from service import admin_routes, api_docs, report_routes, ui
from service.deps import ERRORS, worker_of
from service.http_errors import install_error_handlers
from service.limits import RequestLimits
from service.predict_path import PredictPath, answer_predict
from service.responses import JSONResponse
from service.schemas import (
    ColumnsPredictResponse,
    InfoResponse,
    PredictRequest,
    PredictResponse,
)

JSON_PATHS = ("/predict", "/report")
YAML_PATHS = ("/admin/policy",)

router = APIRouter()


@router.post(
    "/predict",
    response_model=PredictResponse | ColumnsPredictResponse,
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictRequest"}
                }
            },
        }
    },
    summary="Classify instances; every answer passes the guardrails",
)
async def predict(request: Request) -> Response:
    # Normally answered by `PredictPath` before routing; same code either way.
    return await answer_predict(
        request.app.state, await request.body(), request.headers.get("authorization")
    )


@router.get("/info", response_model=InfoResponse, summary="What is being served")
async def info(request: Request) -> JSONResponse:
    return JSONResponse(worker_of(request).dataplane.info())


def create_app(*, max_body_bytes: int) -> FastAPI:
    app = FastAPI(
        title="Flywheel inference service",
        version="1",
        description="ONNX classification behind guardrails, with bad-result reports "
        "feeding a regression gate. Errors share one envelope: ErrorResponse.",
        default_response_class=JSONResponse,
        # FastAPI's docs pages load from a CDN: `api_docs` serves them locally.
        docs_url=None,
        redoc_url=None,
    )
    for r in (router, report_routes.router, report_routes.admin, admin_routes.router):
        app.include_router(r)
    ui.mount(app)
    api_docs.mount(app)
    install_error_handlers(app)
    app.add_middleware(PredictPath)  # type: ignore[arg-type]
    app.add_middleware(
        RequestLimits,  # type: ignore[arg-type]
        max_body_bytes=max_body_bytes,
        json_paths=JSON_PATHS,
        yaml_paths=YAML_PATHS,
    )
    original = app.openapi

    def openapi() -> dict[str, Any]:
        # /predict parses its body by hand (for speed): add its schema.
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["PredictRequest"] = PredictRequest.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
