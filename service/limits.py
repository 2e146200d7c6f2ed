"""ASGI middleware that refuses oversized bodies and wrong content types early.

It runs before any parsing: a body over `max_body_bytes` (by Content-Length, or
counted while streaming when there is none) gets 413, and a JSON endpoint called with
another content type gets 415, each with the usual error envelope.

A chunked body is only found too large while the app reads it, and the app may turn
the read error into an answer of its own (FastAPI makes any body-parsing failure a
400). So the 413 is sent at the moment the limit is crossed, and whatever the app
tries to send after that is dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_BODY_METHODS = {"POST", "PUT", "PATCH"}
_YAML_TYPES = (b"application/yaml", b"application/x-yaml", b"text/yaml", b"text/plain")


class _TooLarge(Exception):
    pass


async def reply(
    send: Send, status: int, code: str, message: str, *, field: str = "body"
) -> None:
    """Answer with the error envelope, before the app has seen the request."""
    body = orjson.dumps({"error": {"code": code, "message": message, "field": field}})
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


def _declared_length(headers: dict[bytes, bytes]) -> int | None:
    """Content-Length as a number; None when absent, -1 when not a number."""
    raw = headers.get(b"content-length")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        return -1
    return value if value >= 0 else -1


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
        length = _declared_length(headers)
        if length == -1:
            await reply(
                send, 400, "bad_request", "Content-Length is not a whole number"
            )
            return
        if length is not None and length > self.max_body_bytes:
            await reply(
                send,
                413,
                "payload_too_large",
                f"request body of {length} bytes exceeds the limit of "
                f"{self.max_body_bytes} bytes",
            )
            return
        path = scope["path"]
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if path in self.json_paths and ctype != b"application/json":
            await reply(
                send,
                415,
                "unsupported_media_type",
                "content type must be application/json, "
                f"got {ctype.decode(errors='replace') or 'none'}",
            )
            return
        if path in self.yaml_paths and ctype not in _YAML_TYPES:
            await reply(
                send,
                415,
                "unsupported_media_type",
                "content type must be application/yaml, "
                f"got {ctype.decode(errors='replace') or 'none'}",
            )
            return
        if length is not None:
            # The server stops reading at Content-Length: the check above suffices.
            await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = 0
        refused = False

        async def counted_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:
                if not refused:
                    refused = True
                    await reply(
                        send,
                        413,
                        "payload_too_large",
                        f"request body exceeds the limit of {self.max_body_bytes} "
                        "bytes",
                    )
                raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        # Raised from the app's read once the 413 is out; the answer is complete.
        with contextlib.suppress(_TooLarge):
            await self.app(scope, counted_receive, guarded_send)
