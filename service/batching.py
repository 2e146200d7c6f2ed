"""Adaptive batching of model calls across concurrent requests in one worker.

While one model call runs (in a thread), rows of newly arriving requests queue up;
the next call takes all of them at once, up to `max_batch_rows`. Nothing waits for a
timer, so an idle service adds no latency, and a busy one (on a GPU, where a batch
costs about as much as a row) amortises each call over many requests. BentoML's own
batchable APIs are not used because their inputs cannot carry the per-request
context the guardrails need, and their `max_latency_ms` is a deadline: a request
still queued when it passes is answered 503, which under load is most of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np


class ModelBatcher:
    def __init__(
        self, predict: Callable[[np.ndarray], np.ndarray], *, max_batch_rows: int
    ):
        self._predict = predict
        self._max_rows = max_batch_rows
        self._pending: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._running = False

    async def predict(self, x: np.ndarray) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((x, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
                rows = 0
                while self._pending and (
                    not batch or rows + len(self._pending[0][0]) <= self._max_rows
                ):
                    item = self._pending.pop(0)
                    batch.append(item)
                    rows += len(item[0])
                try:
                    x = (
                        np.concatenate([b[0] for b in batch])
                        if len(batch) > 1
                        else batch[0][0]
                    )
                    probs = await asyncio.to_thread(self._predict, x)
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                start = 0
                for xb, fut in batch:
                    if not fut.done():
                        fut.set_result(probs[start : start + len(xb)])
                    start += len(xb)
        finally:
            self._running = False
