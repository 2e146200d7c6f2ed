"""ASGI middleware that refuses oversized bodies and wrong content types early.

It runs before any parsing: a body over `max_body_bytes` (by Content-Length, or
counted while streaming when there is none) gets 413, and a JSON endpoint called with
another content type gets 415, each with the usual error envelope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_BODY_METHODS = {b"POST", "POST", "PUT", "PATCH"}


class _TooLarge(Exception):
    pass


async def _reply(send: Send, status: int, code: str, message: str) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message, "field": "body"}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        json_paths: tuple[str, ...],
        yaml_paths: tuple[str, ...] = (),
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.json_paths = json_paths
        self.yaml_paths = yaml_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and int(length or 0) > self.max_body_bytes:
            await _reply(
                send,
                413,
                "payload_too_large",
                f"request body of {int(length)} bytes exceeds the limit of "
                f"{self.max_body_bytes} bytes",
            )
            return
        path = scope["path"]
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if path in self.json_paths and ctype != b"application/json":
            await _reply(
                send,
                415,
                "unsupported_media_type",
                "content type must be application/json, "
                f"got {ctype.decode() or 'none'}",
            )
            return
        if path in self.yaml_paths and ctype not in (
            b"application/yaml",
            b"application/x-yaml",
            b"text/yaml",
            b"text/plain",
        ):
            await _reply(
                send,
                415,
                "unsupported_media_type",
                "content type must be application/yaml, "
                f"got {ctype.decode() or 'none'}",
            )
            return
        if length is not None:
            await self.app(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _reply(
                send,
                413,
                "payload_too_large",
                f"request body exceeds the limit of {self.max_body_bytes} bytes",
            )
