"""Small things every route module needs: the worker's runtime, error responses."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from common.errors import Unavailable
from service.runtime import Runtime
from service.schemas import ErrorResponse

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 429, 503)
}


def runtime_of(request: Request) -> Runtime:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise Unavailable("the service is starting: model not loaded yet")
    return runtime  # type: ignore[no-any-return]
