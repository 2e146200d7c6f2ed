"""Idempotency keys of report submissions: whose key it is, and for which body.

A key alone is chosen by the client, so two clients can pick the same one: a key
is therefore looked up only within its caller's scope (the admin, or the client
address the rate limiter counts), and it is bound to a sha256 of the canonical
body it was first sent with. The same key with another body is a conflict, never
a replay of somebody else's report.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson
from pydantic import BaseModel

#: The scope of a request made with the admin token.
ADMIN_SCOPE = "admin"


def client_scope(address: str) -> str:
    """The scope of an unprivileged caller, by the address its reports count from."""
    return f"client:{address}"


def body_sha256(body: BaseModel) -> str:
    """sha256 of the validated body as canonical JSON (sorted keys, defaults
    filled in), so that field order and omitted defaults do not make it differ."""
    canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's key, the scope it lives in and the body it stands for."""

    key: str
    scope: str
    body_sha256: str

    @classmethod
    def of(cls, key: str, *, scope: str, body: BaseModel) -> IdempotencyKey:
        return cls(key=key, scope=scope, body_sha256=body_sha256(body))
