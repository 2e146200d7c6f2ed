"""The boundary where errors become HTTP responses: one envelope for every 4xx/5xx.

`{"error": {"code", "message", "field"?, "errors"?}}`. Request validation errors
from pydantic name each failing field; 5xx bodies hide internals (logged instead).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import ServiceError, error_body
from service.responses import JSONResponse

log = logging.getLogger(__name__)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def validation_response(errors: list[Any]) -> JSONResponse:
    body: dict[str, Any]
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        ctx = detail.get("ctx") or {}
        message = (
            f"request body is not valid JSON: {ctx.get('error', detail.get('msg'))}"
        )
        body = {
            "error": {"code": "malformed_json", "message": message, "field": "body"}
        }
        return JSONResponse(body, status_code=400)
    cleaned = [
        {
            "field": _loc(e.get("loc", ())),
            "problem": e.get("msg"),
            "type": e.get("type"),
        }
        for e in errors
    ]
    first = cleaned[0]
    message = f"{first['field']}: {first['problem']}"
    if len(cleaned) > 1:
        message += f" (and {len(cleaned) - 1} more problems)"
    body = {
        "error": {
            "code": "validation_error",
            "message": message,
            "field": first["field"],
            "errors": cleaned[:20],
        }
    }
    return JSONResponse(body, status_code=422)


def service_error_response(exc: ServiceError) -> JSONResponse:
    if exc.status_code >= 500:
        log.error("service error: %s", exc.message, exc_info=exc)
    return JSONResponse(
        error_body(exc), status_code=exc.status_code, headers=exc.headers()
    )


def unexpected_error_response(exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(
        {"error": {"code": "internal_error", "message": "internal error"}},
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(list(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {
            "error": {"code": f"http_{exc.status_code}", "message": str(exc.detail)}
        }
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(exc)
