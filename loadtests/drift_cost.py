"""What scheduled drift runs cost the served answers: single-row throughput and
p99 with drift runs every `--interval-s` against drift switched off, in one run.

    python -m loadtests.drift_cost [--interval-s 30] [--seconds 30] [--rounds 2]
        [--connections 16] [--drift-worker]

Two real servers (`python -m service.cli serve`, the default pack and workers,
their own data dirs) are started: `on` runs drift every `interval-s` (in a child
process per run, or with `--drift-worker` in the long-lived niced worker that
imports Evidently once), `off` never. They are loaded one at a time, in the order
off, on, on, off (repeated `rounds` times, so a drift of the machine's load over
the run cancels), with wrk (16 connections of single rows for `seconds`). A drift
run costs CPU on the machine, not inside one server, so the arms cannot run at
the same instants as a paired benchmark would run them; the server not under
load is frozen (SIGSTOP to every process of it, SIGCONT after), so that its
own scheduled work takes nothing from the other arm. During each arm a
trickle of 300 distinct rows every 5 s goes to the loaded server too, and drift
windows are 100,000 rows (the default is 5,000), so that each window holds enough
distinct rows to be judged (wrk repeats one body); a run then costs more than
at the default window.

A drift run's cost grows with how often it runs: the cost at the service's
default interval (300 s) is estimated as the measured cost times
`interval-s / 300`, which holds while runs do not overlap. Prints one JSON line:
req/s and p99 per arm, the ratios, drift runs (by outcome) during the `on` arms,
that estimate, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from loadtests.loadgen import LoadResult, require_tools, wrk
from loadtests.payloads import penguins
from monitoring.traffic import instances, like_training
from service.demo import metric
from service.process import (
    ServiceProcess,
    kill_tree,
    process_tree,
    start_service,
    stop_service_process,
)

DEFAULT_INTERVAL_S = 300.0
TRICKLE_ROWS = 300
TRICKLE_EVERY_S = 5.0
WINDOW_ROWS = 100_000


def drift_runs(svc: ServiceProcess) -> dict[str, float]:
    """Drift runs so far, by outcome."""
    text = httpx.get(f"{svc.url}/metrics", timeout=30).text
    return {
        outcome: metric(text, f'flywheel_drift_runs_total{{outcome="{outcome}"}}')
        or 0.0
        for outcome in ("completed", "skipped", "failed")
    }


def _trickle(svc: ServiceProcess, stop: threading.Event, seed: int) -> None:
    """Distinct rows for the drift window, a batch every few seconds."""
    with httpx.Client(base_url=svc.url, timeout=60) as client:
        while not stop.is_set():
            rows = instances(like_training(TRICKLE_ROWS, seed=seed))
            client.post("/predict", json={"instances": rows})
            seed += 1
            stop.wait(TRICKLE_EVERY_S)


def arm(
    svc: ServiceProcess, body: Path, *, seconds: float, connections: int, seed: int
) -> LoadResult:
    stop = threading.Event()
    trickle = threading.Thread(target=_trickle, args=(svc, stop, seed), daemon=True)
    trickle.start()
    try:
        return wrk(
            f"{svc.url}/predict",
            body,
            connections=connections,
            duration_s=seconds,
            server_pid=svc.process.pid,
        )
    finally:
        stop.set()
        trickle.join(timeout=60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval-s", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=30.0, help="per arm")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--drift-worker", action="store_true")
    args = parser.parse_args(argv)
    if args.interval_s <= 0 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--interval-s and --seconds must be > 0, --rounds >= 1")
    require_tools()
    from packs.build_default import build_default_pack

    work = Path(tempfile.mkdtemp(prefix="drift-cost-"))
    servers: dict[str, ServiceProcess] = {}
    try:
        pack = work / "pack"
        build_default_pack(pack)
        body = work / "single.json"
        body.write_text(json.dumps({"instances": [penguins()[0].features]}))
        interval = {"on": str(args.interval_s), "off": "0"}
        worker = "true" if args.drift_worker else "false"
        for name, every in interval.items():
            servers[name] = start_service(
                work / name, pack, ready_timeout_s=300,
                FLYWHEEL_MONITORING__DRIFT_WORKER=worker,
                FLYWHEEL_MONITORING__DRIFT_INTERVAL_S=every,
                # A frozen server's lease must outlive its freeze.
                FLYWHEEL_LEASES__TTL_S="600",
                # wrk repeats one row: a window of all the arm's rows holds the
                # trickle's distinct ones (and costs more than the default).
                FLYWHEEL_MONITORING__DRIFT_WINDOW_ROWS=str(WINDOW_ROWS),
            )  # fmt: skip
        for svc in servers.values():  # warm-up
            arm(svc, body, seconds=3, connections=args.connections, seed=0)
        results: dict[str, list[LoadResult]] = {"on": [], "off": []}
        runs_before = drift_runs(servers["on"])
        started = time.monotonic()
        order = ["off", "on", "on", "off"] * args.rounds
        for i, name in enumerate(order):
            idle = servers["on" if name == "off" else "off"]
            kill_tree(process_tree(idle.process.pid), signal.SIGSTOP)
            try:
                results[name].append(
                    arm(
                        servers[name], body, seconds=args.seconds,
                        connections=args.connections, seed=1000 * (i + 1),
                    )
                )  # fmt: skip
            finally:
                kill_tree(process_tree(idle.process.pid), signal.SIGCONT)
        runs = {
            k: v - runs_before.get(k, 0.0) for k, v in drift_runs(servers["on"]).items()
        }
        rps = {k: float(np.mean([r.rps for r in v])) for k, v in results.items()}
        p99 = {k: float(np.median([r.p99_ms for r in v])) for k, v in results.items()}
        cost = 1 - rps["on"] / rps["off"]
        summary: dict[str, Any] = {
            "figure": "drift_cost",
            "interval_s": args.interval_s,
            "drift_worker": args.drift_worker,
            "seconds_per_arm": args.seconds,
            "arms": len(order),
            "wall_s": round(time.monotonic() - started, 1),
            "rps": rps,
            "rps_per_arm": {k: [round(r.rps) for r in v] for k, v in results.items()},
            "p99_ms": p99,
            "p99_ms_per_arm": {
                k: [round(r.p99_ms, 1) for r in v] for k, v in results.items()
            },
            "drift_window_rows": WINDOW_ROWS,
            "errors": sum(r.errors for v in results.values() for r in v),
            "throughput_cost": cost,
            "p99_ratio_on_over_off": p99["on"] / p99["off"],
            "drift_runs_while_on": runs,
            "throughput_cost_at_default_interval": cost
            * args.interval_s
            / DEFAULT_INTERVAL_S,
            "loadavg": os.getloadavg(),
        }
        print(json.dumps(summary), flush=True)
    finally:
        for svc in servers.values():
            stop_service_process(svc.process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
