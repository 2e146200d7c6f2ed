"""What the prediction log costs served throughput, over HTTP, in one run.

    .venv/bin/python -m loadtests.log_cost [--pairs 8] [--duration 3]
        [--bodies single batch1000] [--connections 1 16 64]

Starts the full service twice, once as served (`full`) and once with the
prediction log detached (`full-nolog`, `loadtests.variants.FullNoLog`), and for
single rows and 1,000-row batches at 1, 16 and 64 connections runs `--pairs`
pairs of short wrk runs, one on each server back to back, the order alternating
from pair to pair. On a shared machine the load of other work moves a 3 s run by
tens of percent; both runs of a pair see about the same load, so the ratio
within a pair moves far less than either figure. The cost of logging in a cell is
1 - the median over its pairs of (rate with the log / rate without); the
medians of the rates are printed beside it, and the median ratio of the
server's CPU per request (its background threads included, which may run on
another core: an upper bound on what the log takes from answers). Before each
run the servers are let go idle (the full one compacts in the background).

Prints one line per run, then a table and one JSON line per cell.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtests import servers
from loadtests.benchmark import write_bodies
from loadtests.httpruns import ROWS, settle
from loadtests.loadgen import LoadResult, require_tools, wrk
from loadtests.payloads import split_by_service
from packs.build_default import ensure_default_pack

BODIES = ("single", "batch1000")
CONNECTIONS = (1, 16, 64)
ON, OFF = "full", "full-nolog"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cell_summary(
    body: str, connections: int, pairs: list[tuple[LoadResult, LoadResult]]
) -> dict[str, Any]:
    """The figures of one cell from its (with log, without) pairs."""
    ratios = [on.rps / off.rps for on, off in pairs if off.rps > 0]
    ratio = statistics.median(ratios)
    cpu = [_cpu_per_request(on) / _cpu_per_request(off) for on, off in pairs]
    return {
        "body": body,
        "connections": connections,
        "pairs": len(pairs),
        "rows_per_request": ROWS[body],
        "rps_on": statistics.median(on.rps for on, _ in pairs),
        "rps_off": statistics.median(off.rps for _, off in pairs),
        "ratio_on_over_off": ratio,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "cost": 1 - ratio,
        "cpu_ms_per_request_on": statistics.median(
            map(_cpu_per_request, (p[0] for p in pairs))
        ),
        "cpu_ms_per_request_off": statistics.median(
            map(_cpu_per_request, (p[1] for p in pairs))
        ),
        "cpu_ratio_on_over_off": statistics.median(cpu),
        "errors": sum(on.errors + off.errors for on, off in pairs),
    }


def _cpu_per_request(result: LoadResult) -> float:
    """Milliseconds of the server's CPU (all its processes and threads, the
    log's background ones included) per answered request."""
    return result.server_cores * result.seconds / max(result.requests, 1) * 1000


def run(
    pairs: int,
    duration_s: float,
    work: Path,
    bodies_run: tuple[str, ...] = BODIES,
    connections: tuple[int, ...] = CONNECTIONS,
) -> list[dict[str, Any]]:
    pack = work / "pack"
    ensure_default_pack(pack)
    running = {name: servers.start(name, work, pack) for name in (ON, OFF)}
    try:
        for server in running.values():
            servers.wait_ready(server)
        pool, _ = split_by_service(running[ON].url)
        _, bodies = write_bodies(work, pool)
        for name, server in running.items():  # lazy imports, pools, first segment
            for body in bodies_run:
                wrk(f"{server.url}/predict", bodies[body], connections=8, duration_s=1)
            log(f"warmed up {name}")
        pids = [s.pid for s in running.values()]
        cells = []
        for body in bodies_run:
            for c in connections:
                measured = []
                for i in range(pairs):
                    order = (ON, OFF) if i % 2 == 0 else (OFF, ON)
                    got = {}
                    for name in order:
                        settle(pids)
                        got[name] = wrk(
                            f"{running[name].url}/predict",
                            bodies[body],
                            connections=c,
                            duration_s=duration_s,
                            server_pid=running[name].pid,
                        )
                    measured.append((got[ON], got[OFF]))
                    log(
                        f"{body:10} c={c:<3} pair {i + 1}/{pairs}: "
                        f"with log {got[ON].rps:8,.0f} req/s, "
                        f"without {got[OFF].rps:8,.0f} req/s"
                    )
                cells.append(cell_summary(body, c, measured))
        return cells
    finally:
        for server in running.values():
            servers.stop(server)


def table(cells: list[dict[str, Any]]) -> str:
    lines = [
        "| cell | with log (req/s) | without (req/s) | median ratio (min–max) "
        "| cost of logging | server CPU per request, with / without |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c['body']}, {c['connections']} conn | {c['rps_on']:,.0f} "
            f"| {c['rps_off']:,.0f} | {c['ratio_on_over_off']:.3f} "
            f"({c['ratio_min']:.2f}–{c['ratio_max']:.2f}) | {c['cost']:.1%} "
            f"| {c['cpu_ratio_on_over_off']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8, help="run pairs per cell")
    parser.add_argument(
        "--duration", type=float, default=3.0, help="seconds per wrk run"
    )
    parser.add_argument(
        "--bodies",
        nargs="+",
        default=list(BODIES),
        choices=list(ROWS),
        help="request bodies (default: %(default)s)",
    )
    parser.add_argument(
        "--connections",
        nargs="+",
        type=int,
        default=list(CONNECTIONS),
        help="wrk connections per cell (default: %(default)s)",
    )
    args = parser.parse_args()
    if args.pairs < 1 or args.duration < 1 or min(args.connections) < 1:
        parser.error("--pairs, --duration and --connections must be at least 1")
    require_tools()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="log-cost-") as tmp:
        cells = run(
            args.pairs,
            args.duration,
            Path(tmp),
            tuple(args.bodies),
            tuple(args.connections),
        )
    print(table(cells))
    for cell in cells:
        print(json.dumps({"figure": "log_cost", **cell}))
    print(json.dumps({"figure": "total", "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()
