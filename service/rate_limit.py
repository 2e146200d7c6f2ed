"""Per-client token buckets (in-process, per worker) for report submission."""

from __future__ import annotations

import threading
import time

from common.errors import TooManyRequests


class RateLimiter:
    def __init__(self, *, per_minute: int, max_clients: int = 10_000):
        self.capacity = float(per_minute)
        self.refill_per_s = per_minute / 60.0
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Take one token for `client` or raise TooManyRequests (429, Retry-After)."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill_per_s)
            if tokens < 1.0:
                wait_s = int((1.0 - tokens) / self.refill_per_s) + 1
                self._buckets[client] = (tokens, now)
                raise TooManyRequests(
                    f"too many reports from this client: at most {int(self.capacity)} "
                    f"per minute; retry in {wait_s} s",
                    retry_after_s=wait_s,
                )
            if len(self._buckets) >= self.max_clients and client not in self._buckets:
                self._buckets.clear()  # bounded memory; a reset only forgives
            self._buckets[client] = (tokens - 1.0, now)
