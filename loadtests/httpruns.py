"""The HTTP part of the benchmark: every server, body and concurrency, interleaved.

Runs are interleaved (one repetition of every server, then the next repetition)
so that a burst of unrelated work on a shared machine lands on all servers alike
instead of on whichever happened to run then; each cell reports the median of its
repetitions with the min–max spread.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadtests.loadgen import LoadResult, hey, tree_cpu_s, wrk
from loadtests.servers import Server


@dataclass(frozen=True)
class Cell:
    body: str
    """Name of a body file: single, single_context, batch1000, columns1000."""
    server: str
    connections: int


@dataclass
class CellResult:
    cell: Cell
    rows_per_request: int
    runs: list[LoadResult] = field(default_factory=list)

    def _median(self, key: Callable[[LoadResult], float]) -> float:
        return statistics.median(key(r) for r in self.runs)

    @property
    def rps(self) -> float:
        return self._median(lambda r: r.rps)

    @property
    def rps_min(self) -> float:
        return min(r.rps for r in self.runs)

    @property
    def rps_max(self) -> float:
        return max(r.rps for r in self.runs)

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.rows_per_request

    @property
    def p50_ms(self) -> float:
        return self._median(lambda r: r.p50_ms)

    @property
    def p95_ms(self) -> float:
        return self._median(lambda r: r.p95_ms)

    @property
    def p99_ms(self) -> float:
        return self._median(lambda r: r.p99_ms)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.runs)

    @property
    def server_cores(self) -> float:
        return self._median(lambda r: r.server_cores)

    @property
    def background_cores(self) -> float:
        return self._median(lambda r: r.background_cores)

    @property
    def generator_cpu_s_per_1000(self) -> float:
        requests = self.requests
        cpu = sum(r.generator_cpu_s for r in self.runs)
        return cpu / requests * 1000 if requests else float("nan")


ROWS = {"single": 1, "single_context": 1, "batch1000": 1000, "columns1000": 1000}


def plan(servers: list[str], connections: tuple[int, ...]) -> list[Cell]:
    """Every server for single rows and named 1,000-row batches; columnar batches
    and island contexts only exist on the full service."""
    cells = []
    for body in ("single", "batch1000"):
        for c in connections:
            cells += [Cell(body, s, c) for s in servers]
    if "full" in servers:
        cells += [Cell("columns1000", "full", c) for c in connections]
        cells.append(Cell("single_context", "full", 16))
    return cells


def settle(
    pids: list[int],
    *,
    idle_cores: float = 0.15,
    window_s: float = 0.3,
    max_s: float = 20,
) -> float:
    """Wait until the servers are idle (e.g. the full service has drained the
    prediction-log backlog a batch run left), so one run does not slow the next.
    Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < max_s:
        before = sum(tree_cpu_s(p) for p in pids)
        time.sleep(window_s)
        if (sum(tree_cpu_s(p) for p in pids) - before) / window_s < idle_cores:
            break
    return time.monotonic() - started


def run_cells(
    cells: list[Cell],
    servers: dict[str, Server],
    bodies: dict[str, Path],
    *,
    repeats: int,
    duration_s: float,
    cpu: int | None,
    progress: Callable[[str], None],
) -> list[CellResult]:
    results = {c: CellResult(c, ROWS[c.body]) for c in cells}
    for name, server in servers.items():  # first requests pay lazy imports, pools
        for body in ("single", "batch1000"):
            wrk(f"{server.url}/predict", bodies[body], connections=8, duration_s=1)
        progress(f"warmed up {name}")
    pids = [s.pid for s in servers.values()]
    for rep in range(repeats):
        for cell in cells:
            server = servers[cell.server]
            waited = settle(pids)
            if waited > 2:
                progress(f"waited {waited:.1f} s for the servers to go idle")
            result = wrk(
                f"{server.url}/predict",
                bodies[cell.body],
                connections=cell.connections,
                duration_s=duration_s,
                cpu=cpu,
                server_pid=server.pid,
            )
            results[cell].runs.append(result)
            progress(
                f"[{rep + 1}/{repeats}] {cell.server:13} {cell.body:14} "
                f"c={cell.connections:<3} {result.rps:9,.0f} req/s "
                f"p99 {result.p99_ms:6.1f} ms  errors {result.errors}"
            )
    return list(results.values())


def latency_crosscheck(
    servers: dict[str, Server],
    body: Path,
    names: list[str],
    connections: tuple[int, ...],
    *,
    duration_s: float,
    cpu: int | None,
) -> list[tuple[str, int, LoadResult]]:
    """The same single-row load with hey, whose percentiles come from its own
    clock: if they agree with wrk's, wrk's microsecond percentiles can be used."""
    out = []
    pids = [s.pid for s in servers.values()]
    for name in names:
        server = servers[name]
        for c in connections:
            settle(pids)
            result = hey(
                f"{server.url}/predict",
                body,
                connections=c,
                duration_s=duration_s,
                cpu=cpu,
                server_pid=server.pid,
            )
            out.append((name, c, result))
    return out


@dataclass
class MixedResult:
    predictions: LoadResult
    reports_sent: int
    reports_created: int
    reports_replayed: int
    report_failures: list[str]


def predictions_while_reporting(
    server: Server,
    body: Path,
    batch_body: bytes,
    labels_by_row: list[str],
    *,
    connections: int,
    duration_s: float,
    cpu: int | None,
) -> MixedResult:
    """Single-row load on the full service while one client files bad-result
    reports (by prediction id, with Idempotency-Key; every fifth one a retry of
    an earlier key, which must replay with 200)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post(
            "/predict",
            content=batch_body,
            headers={"Content-Type": "application/json"},
        )
        answer.raise_for_status()
        ids = [p["prediction_id"] for p in answer.json()["predictions"]]
    settle([server.pid])
    stop = threading.Event()
    counts = {"sent": 0, "created": 0, "replayed": 0}
    failures: list[str] = []
    sent: dict[str, dict[str, Any]] = {}  # idempotency key -> payload

    def report_loop() -> None:
        keys: list[str] = []
        with httpx.Client(base_url=server.url, timeout=30) as client:
            i = 0
            while not stop.is_set():
                retry = i % 5 == 4 and bool(keys)
                if retry:
                    key = keys[i // 5 % len(keys)]
                else:
                    key = str(uuid.uuid4())
                    row = len(keys) % len(ids)
                    keys.append(key)
                    sent[key] = {
                        "prediction_id": ids[row],
                        "expected_label": labels_by_row[row],
                        "categories": ["benchmark"],
                    }
                payload = sent[key]
                response = client.post(
                    "/report", json=payload, headers={"Idempotency-Key": key}
                )
                counts["sent"] += 1
                if response.status_code == 201:
                    counts["created"] += 1
                elif response.status_code == 200 and retry:
                    counts["replayed"] += 1
                else:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                i += 1
                time.sleep(0.005)

    thread = threading.Thread(target=report_loop, name="reports", daemon=True)
    thread.start()
    try:
        load = wrk(
            f"{server.url}/predict",
            body,
            connections=connections,
            duration_s=duration_s,
            cpu=cpu,
            server_pid=server.pid,
        )
    finally:
        stop.set()
        thread.join(timeout=60)
    return MixedResult(
        load, counts["sent"], counts["created"], counts["replayed"], failures
    )


def scrape_log_counters(server: Server) -> dict[str, float]:
    """The full service's prediction-log counters from /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        for key in ("written", "dropped"):
            if line.startswith(f"flywheel_prediction_log_{key}_rows_total "):
                out[key] = float(line.split()[1])
    return out
