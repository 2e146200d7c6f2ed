"""The `/admin` dependency: the admin token, checked by the worker's `Access`.

The `HTTPBearer` dependency only documents the scheme in the OpenAPI schema; the
decision is `Access.check_admin` on the raw header.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.deps import worker_of

_documented = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="`Authorization: Bearer <FLYWHEEL_SECURITY__ADMIN_TOKEN>`",
)


def require_admin(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_documented)] = None,
) -> None:
    worker_of(request).access.check_admin(request.headers.get("authorization"))
