"""Small things every route module needs: the worker's parts, error responses."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from common.errors import Unavailable
from service.schemas import ErrorResponse
from service.worker import Worker

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 429, 503)
}


def worker_of(request: Request) -> Worker:
    return worker_in(request.app.state)


def worker_in(state: Any) -> Worker:
    """The worker attached to an app's state, or 503 while it is starting."""
    worker = getattr(state, "worker", None)
    if worker is None:
        raise Unavailable("the service is starting: model not loaded yet")
    return worker  # type: ignore[no-any-return]
