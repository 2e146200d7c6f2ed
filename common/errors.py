"""The error hierarchy every package raises from, and the one place it maps to HTTP.

    ServiceError (500, base: never shown to users in detail)
    ├── BadRequest (400)            malformed JSON, wrong content type, bad shapes
    ├── Unauthorized (401)          missing or wrong admin / API token
    ├── Forbidden (403)             a form without its CSRF token, an expired page
    ├── NotFound (404)              unknown prediction id, unknown report
    ├── Conflict (409)              gate refused a candidate pack
    ├── PayloadTooLarge (413)       body or batch over the configured limit
    ├── Unprocessable (422)         valid JSON whose values are not allowed
    │   ├── packs.errors.*          (pack problems surface at start-up instead)
    │   ├── guardrails.errors.*     input out of bounds, bad policy, bad priors
    │   └── feedback.errors.*       unknown label, bad triage update
    ├── TooManyRequests (429)       report rate limit
    └── Unavailable (503)           database down: retry later (Retry-After)

Each subclass builds its message from arguments, so an error says which field was
wrong, what it was and what is allowed. `error_body` is the only function that
turns an error into a response body; for 5xx it hides the internals.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Base class: an error with an HTTP status and a body made for people."""

    status_code: ClassVar[int] = 500
    #: Machine-readable error type, stable across releases.
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, **detail: Any):
        super().__init__(message)
        self.message = message
        self.field = field
        self.detail = detail

    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. Retry-After)."""
        return {}


class BadRequest(ServiceError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class Unprocessable(ServiceError):
    status_code = 422
    code = "unprocessable"


class TooManyRequests(ServiceError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: int = 1, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Unavailable(ServiceError):
    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


def error_body(exc: ServiceError) -> dict[str, Any]:
    """The JSON body for an error: `{"error": {"code", "message", "field", ...}}`."""
    if exc.status_code >= 500 and not isinstance(exc, Unavailable):
        return {"error": {"code": "internal_error", "message": "internal error"}}
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field is not None:
        body["field"] = exc.field
    body.update(exc.detail)
    return {"error": body}
