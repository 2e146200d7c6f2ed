"""ASGI middleware that refuses requests with too many or too large headers (431).

BentoML runs uvicorn with its httptools parser, which has no header limit of its
own and whose settings BentoML does not expose; this middleware is installed on
the whole BentoML app (probes and `/metrics` included), so no route sees a request
whose headers exceed the limits. The parser has read the headers by then: the
limit bounds what the service keeps and works on, not what one read may buffer.
"""

from __future__ import annotations

from service.limits import ASGIApp, Receive, Scope, Send, reply


class HeaderLimits:
    def __init__(self, app: ASGIApp, *, max_header_bytes: int, max_headers: int):
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            size = sum(len(name) + len(value) for name, value in headers)
            if len(headers) > self.max_headers:
                await _too_large(
                    send, f"{len(headers)} request headers; at most {self.max_headers}"
                )
                return
            if size > self.max_header_bytes:
                await _too_large(
                    send,
                    f"request headers of {size} bytes; at most "
                    f"{self.max_header_bytes} bytes in all",
                )
                return
        await self.app(scope, receive, send)


async def _too_large(send: Send, detail: str) -> None:
    await reply(
        send,
        431,
        "request_header_fields_too_large",
        detail,
        field="headers",
    )
