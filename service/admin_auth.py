"""Bearer-token check for `/admin` routes (constant-time, never logged).

The `HTTPBearer` dependency only documents the scheme in the OpenAPI schema; the
decision is `bearer_matches` on the raw header, so a missing, malformed or wrong
header is always a 401 and never reaches the route.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from common.errors import Unauthorized
from service.deps import runtime_of
from service.runtime import bearer_matches

_documented = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="`Authorization: Bearer <FLYWHEEL_SECURITY__ADMIN_TOKEN>`",
)


def require_admin(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_documented)] = None,
) -> None:
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
