"""Bare BentoML services for the benchmark: the same model pack, no guardrails, no
logging, the same request and response bodies as `loadtests/raw_app.py`:

    BareDefaults   `@bentoml.api` at BentoML's defaults (sync handler, access log)
    BareTuned      async `@bentoml.api`, access log off, GC frozen after start-up
    BareMounted    the raw ASGI app (parse -> onnxruntime -> JSON) mounted with
                   `@bentoml.asgi_app`, access log off, GC frozen

Each runs one worker, like the full service by default:
`bentoml serve loadtests.bare_service:BareTuned`.
"""

from __future__ import annotations

from typing import Any

import bentoml

from loadtests.raw_app import RawPredictApp, answer, freeze_gc, load_pack, to_array


@bentoml.service(name="bare_defaults", workers=1)
class BareDefaults:
    def __init__(self) -> None:
        self.pack = load_pack()

    @bentoml.api
    def predict(self, instances: list[dict[str, float]]) -> dict[str, Any]:
        return answer(self.pack, to_array(self.pack, instances))


@bentoml.service(name="bare_tuned", workers=1, logging={"access": {"enabled": False}})
class BareTuned:
    def __init__(self) -> None:
        self.pack = load_pack()
        freeze_gc()

    @bentoml.api
    async def predict(self, instances: list[dict[str, float]]) -> dict[str, Any]:
        return answer(self.pack, to_array(self.pack, instances))


raw_app = RawPredictApp()


@bentoml.service(name="bare_mounted", workers=1, logging={"access": {"enabled": False}})
@bentoml.asgi_app(raw_app, path="/")
class BareMounted:
    def __init__(self) -> None:
        raw_app.load()
        freeze_gc()
