"""A JSON response rendered with orjson (FastAPI deprecated its own JSONResponse)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as StarletteJSONResponse


class JSONResponse(StarletteJSONResponse):
    # A subclass of Starlette's JSONResponse, or FastAPI documents every 200 body
    # as `{"type": "string"}` instead of the route's response_model.

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
