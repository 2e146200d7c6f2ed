"""What a shadow run costs the served answers: single-row /predict p50 with a
candidate in shadow at 10% sampling against no shadow run, on one real server.

    python -m loadtests.shadow_benchmark [--seconds 20] [--rounds 4]
        [--connections 2] [--sample-rate 0.1]

One `python -m service.cli serve` (1 worker, the default pack) is started; the
arms alternate in `rounds` rounds (no shadow, shadow, no shadow, ...), each arm
`seconds / rounds` long, so that other work on a shared machine hits both arms
alike. The load is closed-loop from `connections` client processes, one
keep-alive connection each, timing every request with `perf_counter_ns` (hey
reports latency only to 0.1 ms, too coarse for a ~1 ms p50). It prints one JSON
line per round and a summary with the p50 ratio (shadow / none), the shadow
run's own counts and the load average.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.payloads import penguins
from service.process import start_service, stop_service_process

ADMIN_TOKEN = "shadow-benchmark-token-0123456789abcdef"


def _client(url: str, bodies: list[bytes], seconds: float, out: Any) -> None:
    """One closed-loop keep-alive connection; sends its latencies (ns) to `out`."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    latencies: list[int] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        body = bodies[i % len(bodies)]
        i += 1
        t0 = time.perf_counter_ns()
        conn.request("POST", "/predict", body, headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter_ns() - t0)
        errors += response.status != 200
    conn.close()
    out.put((latencies, errors))


def load(
    url: str, bodies: list[bytes], seconds: float, connections: int
) -> dict[str, Any]:
    """Closed-loop load for `seconds`; p50/p95 in ms, requests, errors."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(url, bodies, seconds, out))
        for _ in range(connections)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    latencies = np.concatenate([np.array(r[0], dtype=np.int64) for r in results])
    return {
        "requests": len(latencies),
        "errors": sum(r[1] for r in results),
        "p50_ms": float(np.percentile(latencies, 50) / 1e6),
        "p95_ms": float(np.percentile(latencies, 95) / 1e6),
        "latencies_ns": latencies,
    }


def _admin(url: str, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    import httpx

    r = httpx.request(
        method,
        f"{url}/admin/shadow",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=120,
    )
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per arm")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--sample-rate", type=float, default=0.1)
    args = parser.parse_args()

    from packs.build_default import build_default_pack

    work = Path(tempfile.mkdtemp(prefix="shadow-bench-"))
    try:
        served, candidate = work / "packs" / "served", work / "packs" / "candidate"
        build_default_pack(served)
        build_default_pack(candidate, hidden=(32,))
        svc = start_service(
            work / "data",
            served,
            ready_timeout_s=300,
            FLYWHEEL_SECURITY__ADMIN_TOKEN=ADMIN_TOKEN,
            FLYWHEEL_MONITORING__DRIFT_INTERVAL_S="0",
        )
        try:
            bodies = [
                json.dumps({"instances": [p.features]}).encode()
                for p in penguins()[::7]
            ]
            load(svc.url, bodies, 3.0, args.connections)  # warm-up
            arm_s = args.seconds / args.rounds
            pooled: dict[str, list[np.ndarray]] = {"none": [], "shadow": []}
            requests = {"none": 0, "shadow": 0}
            errors = 0
            for i in range(args.rounds):
                for arm in ("none", "shadow"):
                    if arm == "shadow":
                        _admin(
                            svc.url,
                            "POST",
                            {
                                "pack_dir": str(candidate),
                                "sample_rate": args.sample_rate,
                            },
                        )
                        time.sleep(1.5)  # the worker polls the run every second
                    r = load(svc.url, bodies, arm_s, args.connections)
                    if arm == "shadow":
                        shadow = _admin(svc.url, "DELETE")
                        time.sleep(1.5)
                    pooled[arm].append(r.pop("latencies_ns"))
                    requests[arm] += r["requests"]
                    errors += r["errors"]
                    print(json.dumps({"round": i, "arm": arm, **r}), flush=True)
            p50 = {
                arm: float(np.percentile(np.concatenate(v), 50) / 1e6)
                for arm, v in pooled.items()
            }
            p95 = {
                arm: float(np.percentile(np.concatenate(v), 95) / 1e6)
                for arm, v in pooled.items()
            }
            print(
                json.dumps(
                    {
                        "summary": True,
                        "seconds_per_arm": args.seconds,
                        "rounds": args.rounds,
                        "connections": args.connections,
                        "sample_rate": args.sample_rate,
                        "requests": requests,
                        "errors": errors,
                        "p50_ms": p50,
                        "p95_ms": p95,
                        "p50_ratio_shadow_over_none": p50["shadow"] / p50["none"],
                        "last_shadow_run": {
                            k: shadow[k]
                            for k in (
                                "rows_seen",
                                "rows_dropped",
                                "agreement",
                                "candidate_latency_ms_per_row",
                            )
                        },
                        "loadavg": os.getloadavg(),
                    }
                ),
                flush=True,
            )
        finally:
            stop_service_process(svc.process)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
