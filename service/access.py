"""Who may call what: the optional client API key and the admin token.

Both are compared in constant time and never logged. A missing, malformed or
wrong header is a 401 that never reaches the route.
"""

from __future__ import annotations

import hmac

from common.errors import Unauthorized
from service.settings import SecuritySettings


def bearer_matches(authorization: str | None, secret: str) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization[7:].encode(), secret.encode())


class Access:
    def __init__(self, security: SecuritySettings):
        self._api_key = security.api_key
        self._admin_token = security.admin_token

    def check_client(self, authorization: str | None) -> None:
        """/predict and /report: the API key, when one is set."""
        key = self._api_key
        if key is not None and not bearer_matches(
            authorization, key.get_secret_value()
        ):
            raise Unauthorized(
                "missing or wrong API key: send Authorization: Bearer <key>"
            )

    def is_admin(self, authorization: str | None) -> bool:
        """True when the header carries the admin token (never raises)."""
        token = self._admin_token
        return token is not None and bearer_matches(
            authorization, token.get_secret_value()
        )

    def check_admin(self, authorization: str | None) -> None:
        """/admin routes: the admin token; refused outright while none is set."""
        token = self._admin_token
        if token is None:
            raise Unauthorized(
                "admin routes are disabled: "
                "set FLYWHEEL_SECURITY__ADMIN_TOKEN to enable them"
            )
        if not bearer_matches(authorization, token.get_secret_value()):
            raise Unauthorized(
                "missing or wrong admin token: send Authorization: Bearer <token>"
            )
