"""Signed session cookies and CSRF tokens for the admin pages (HMAC-SHA256).

A session is `<payload>.<signature>`: the payload is base64url JSON holding the
issue time and a random nonce, the signature an HMAC over it with a key derived
from the admin token. Changing the admin token therefore logs everybody out.
A form's CSRF token is an HMAC of the session's nonce, so it is valid for one
session only and cannot be computed without the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from common.errors import Forbidden


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class UISession:
    issued_at: int
    nonce: str


class SessionSigner:
    """Issues and checks session cookies and CSRF tokens for one admin token."""

    def __init__(self, admin_token: str, *, max_age_s: int):
        self._key = hashlib.sha256(
            b"flywheel-admin-ui\0" + admin_token.encode()
        ).digest()
        self.max_age_s = max_age_s

    def _sign(self, message: str) -> str:
        return _b64(hmac.new(self._key, message.encode(), hashlib.sha256).digest())

    def issue(self, *, now: float | None = None) -> str:
        """A new session cookie value."""
        payload = {"iat": int(time.time() if now is None else now)}
        payload["n"] = secrets.token_hex(16)  # type: ignore[assignment]
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def read(self, cookie: str | None, *, now: float | None = None) -> UISession | None:
        """The session in a cookie, or None if missing, forged or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            payload = json.loads(_unb64(body))
            issued, nonce = int(payload["iat"]), str(payload["n"])
        except (ValueError, KeyError, TypeError):
            return None
        age = (time.time() if now is None else now) - issued
        if not 0 <= age <= self.max_age_s:
            return None
        return UISession(issued_at=issued, nonce=nonce)

    def csrf_token(self, nonce: str) -> str:
        """The CSRF token forms carry for the session (or login form) with `nonce`."""
        return self._sign(f"csrf:{nonce}")

    def check_csrf(self, nonce: str, token: str | None) -> None:
        """Refuse (403) a form whose token does not belong to this session."""
        if not token or not hmac.compare_digest(token, self.csrf_token(nonce)):
            raise Forbidden(
                "the form's CSRF token is missing or does not belong to this "
                "session: reload the page and submit it again",
                field="csrf_token",
            )
