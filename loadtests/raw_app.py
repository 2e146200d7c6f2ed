"""The bare ASGI app the benchmark compares the service with: parse -> onnxruntime
-> JSON, nothing else (no guardrails, logging or metrics).

It answers `POST /predict` with the service's request body
(`{"instances": [{feature: value}, ...]}`) and `{"predictions": [{label,
probabilities}]}`, and `GET /readyz`. `loadtests/bare_service.py` mounts it in
BentoML; on plain uvicorn it is the ceiling for Python HTTP here:

    uvicorn --factory loadtests.raw_app:make_raw_app

The pack is the service's own (`FLYWHEEL_PACK_DIR`, read through
`service.settings.Settings`), so every server runs the same model file.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
import orjson

from packs.loader import ModelPack
from service.settings import Settings

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def load_pack() -> ModelPack:
    settings = Settings()
    serving = settings.serving
    return ModelPack.load(
        settings.active_pack_dir,
        providers=serving.providers,
        intra_op_threads=serving.intra_op_threads,
    )


def answer(pack: ModelPack, x: np.ndarray) -> dict[str, Any]:
    """Label and probabilities per row: what a bare service returns."""
    labels = pack.metadata.labels
    probs = pack.predict_proba(x)
    best = probs.argmax(axis=1).tolist()
    return {
        "predictions": [
            {"label": labels[b], "probabilities": dict(zip(labels, p, strict=True))}
            for b, p in zip(best, probs.tolist(), strict=True)
        ]
    }


def to_array(pack: ModelPack, instances: list[dict[str, float]]) -> np.ndarray:
    names = pack.metadata.feature_names
    return np.asarray([[row[n] for n in names] for row in instances], np.float32)


def freeze_gc() -> None:
    # Same start-up tuning as the full service (service/service.py).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


class RawPredictApp:
    """A bare ASGI callable: read body -> orjson -> onnxruntime -> orjson."""

    def __init__(self) -> None:
        self.pack: ModelPack | None = None

    def load(self) -> None:
        self.pack = load_pack()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"] == "/readyz":
            await _send(send, 200 if self.pack else 503, b'"ok"')
            return
        if scope["path"] != "/predict" or scope["method"] != "POST":
            await _send(send, 404, b'{"error":"not found"}')
            return
        pack = self.pack
        if pack is None:
            await _send(send, 503, b'{"error":"starting"}')
            return
        try:
            x = to_array(pack, orjson.loads(body)["instances"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            await _send(send, 400, orjson.dumps({"error": str(exc)}))
            return
        await _send(send, 200, orjson.dumps(answer(pack, x)))


async def _send(send: Send, status: int, body: bytes) -> None:
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


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def make_raw_app() -> RawPredictApp:
    """Factory for plain uvicorn: loads the pack and freezes the heap."""
    app = RawPredictApp()
    app.load()
    freeze_gc()
    return app
