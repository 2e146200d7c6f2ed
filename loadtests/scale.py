"""Column throughput of the full service by worker count, with logging on.

    .venv/bin/python -m loadtests.scale [--workers 1 2 4 8] [--duration 10]
        [--connections 64] [--threads 2] [--body columns1000] [--sample 200]
        [--pack DIR]

For each worker count, starts the full service with `serving.workers` workers
(its own data directory, the prediction log on), warms it up, and drives
`POST /predict` with wrk (`--threads` threads, `--connections` keep-alive
connections) for `--duration` seconds. Meanwhile one more client sends the same
body now and then and keeps the prediction ids it is answered; right after the
run, `--sample` of those ids, drawn at random, are reported by id (`POST
/report`), most of them before their rows are compacted. From `/metrics` it reads
the rows answered (`flywheel_predictions_total` + abstentions) and the rows the
log dropped (`flywheel_prediction_log_dropped_rows_total`).

One worker count per line on stderr as it goes, then a table and one JSON line
per worker count. On a 2-core machine the load generator and the workers share
the cores: the worker counts worth running there are 1 and 2; the point of the
others is a machine with cores for them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadtests import servers
from loadtests.benchmark import write_bodies
from loadtests.httpruns import ROWS, settle
from loadtests.loadgen import require_tools, wrk
from loadtests.payloads import split_by_service
from packs.build_default import ensure_default_pack

ANSWERED = ("flywheel_predictions_total", "flywheel_abstentions_total")
DROPPED = "flywheel_prediction_log_dropped_rows_total"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def metric_sum(text: str, names: tuple[str, ...]) -> float:
    """Sum of every sample with one of these names in a Prometheus text page."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in names
    )


def _counts(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return metric_sum(text, ANSWERED), metric_sum(text, (DROPPED,))


class IdCollector(threading.Thread):
    """Sends `body` in a loop while the load runs and keeps the ids answered."""

    def __init__(self, url: str, body: bytes, pause_s: float = 0.2):
        super().__init__(daemon=True)
        self.url, self.body, self.pause_s = url, body, pause_s
        self.ids: list[str] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"content-type": "application/json"}
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                answer = client.post(
                    f"{self.url}/predict", content=self.body, headers=headers
                )
                if answer.status_code != 200:
                    self.failures += 1
                else:
                    doc = answer.json()
                    if "columns" in doc:
                        self.ids += doc["columns"]["prediction_id"]
                    else:
                        self.ids += [p["prediction_id"] for p in doc["predictions"]]
                self.stop.wait(self.pause_s)


def report_sample(url: str, ids: list[str], n: int, seed: int = 0) -> dict[str, int]:
    """Report `n` of `ids` drawn at random; counts by HTTP status."""
    chosen = random.Random(seed).sample(ids, min(n, len(ids)))
    statuses: dict[str, int] = {}
    with httpx.Client(timeout=30) as client:
        for pid in chosen:
            answer = client.post(
                f"{url}/report",
                json={"prediction_id": pid, "comment": "loadtests.scale sample"},
            )
            key = str(answer.status_code)
            statuses[key] = statuses.get(key, 0) + 1
    return statuses


def measure(
    workers: int,
    work: Path,
    pack: Path,
    *,
    body: str,
    duration_s: float,
    connections: int,
    threads: int,
    sample: int,
) -> dict[str, Any]:
    place = work / f"w{workers}"
    place.mkdir()
    server = servers.start(
        "full", place, pack, settings={"FLYWHEEL_SERVING__WORKERS": str(workers)}
    )
    try:
        servers.wait_ready(server, timeout_s=240)
        pool, _ = split_by_service(server.url)
        _, bodies = write_bodies(place, pool)
        wrk(f"{server.url}/predict", bodies[body], connections=connections,
            duration_s=2, threads=threads)  # fmt: skip
        settle([server.pid])
        answered0, dropped0 = _counts(server.url)
        collector = IdCollector(server.url, bodies[body].read_bytes())
        collector.start()
        result = wrk(
            f"{server.url}/predict",
            bodies[body],
            connections=connections,
            duration_s=duration_s,
            server_pid=server.pid,
            threads=threads,
        )
        collector.stop.set()
        collector.join()
        reports = report_sample(server.url, collector.ids, sample)
        time.sleep(2.5)  # the metrics buffers flush every second
        answered1, dropped1 = _counts(server.url)
    finally:
        servers.stop(server)
    rows = ROWS[body]
    return {
        "workers": workers,
        "body": body,
        "connections": connections,
        "threads": threads,
        "requests_per_s": result.rps,
        "rows_per_s": result.rps * rows,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors + collector.failures,
        "server_cores": result.server_cores,
        "generator_cpu_s": result.generator_cpu_s,
        "rows_answered": answered1 - answered0,
        "rows_dropped": dropped1 - dropped0,
        "reports_sampled": sum(reports.values()),
        "reports_created": reports.get("201", 0),
        "report_statuses": reports,
    }


def table(cells: list[dict[str, Any]]) -> str:
    lines = [
        "| workers | rows/s | req/s | p50 / p99 (ms) | server cores | errors "
        "| rows answered | rows dropped | reports by id created |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c['workers']} | {c['rows_per_s']:,.0f} | {c['requests_per_s']:,.0f} "
            f"| {c['p50_ms']:.1f} / {c['p99_ms']:.1f} | {c['server_cores']:.2f} "
            f"| {c['errors']} | {c['rows_answered']:,.0f} | {c['rows_dropped']:,.0f} "
            f"| {c['reports_created']} / {c['reports_sampled']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--body", default="columns1000", choices=list(ROWS))
    parser.add_argument("--sample", type=int, default=200, help="ids reported")
    parser.add_argument(
        "--pack", type=Path, help="model pack (default: the default pack, built)"
    )
    args = parser.parse_args()
    if min(args.workers) < 1 or args.duration < 1 or args.connections < 1:
        parser.error("--workers, --duration and --connections must be at least 1")
    if args.threads < 1 or args.threads > args.connections:
        parser.error("--threads must be between 1 and --connections")
    require_tools()
    started = time.monotonic()
    cells = []
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        work = Path(tmp)
        pack = args.pack or ensure_default_pack(work / "pack")
        for w in args.workers:
            cell = measure(
                w,
                work,
                pack,
                body=args.body,
                duration_s=args.duration,
                connections=args.connections,
                threads=args.threads,
                sample=args.sample,
            )
            log(
                f"{w} workers: {cell['rows_per_s']:,.0f} rows/s, "
                f"{cell['rows_dropped']:,.0f} dropped, reports "
                f"{cell['reports_created']}/{cell['reports_sampled']} created"
            )
            cells.append(cell)
    print(table(cells))
    for cell in cells:
        print(json.dumps({"figure": "scale", **cell}))
    print(json.dumps({"figure": "total", "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()
