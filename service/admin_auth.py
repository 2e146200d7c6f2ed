"""Bearer-token check for `/admin` routes (constant-time, never logged)."""

from __future__ import annotations

from fastapi import Request

from common.errors import Unauthorized
from service.deps import runtime_of
from service.runtime import bearer_matches


def require_admin(request: Request) -> None:
    token = runtime_of(request).settings.security.admin_token
    if token is None:
        raise Unauthorized(
            "admin routes are disabled: "
            "set FLYWHEEL_SECURITY__ADMIN_TOKEN to enable them"
        )
    if not bearer_matches(
        request.headers.get("authorization"), token.get_secret_value()
    ):
        raise Unauthorized(
            "missing or wrong admin token: send Authorization: Bearer <token>"
        )
