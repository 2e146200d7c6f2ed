"""What a shadow run costs the served answers: single-row /predict p50 with a
candidate in shadow at 10% sampling against no shadow run, in the same run.

    python -m loadtests.shadow_benchmark [--seconds 20] [--connections 2]
        [--sample-rate 0.1] [--control]

Two real servers (`python -m service.cli serve`, 1 worker each, the same default
pack, their own data dirs) are started. Each client process holds one keep-alive
connection to each server and alternates its requests between them, closed-loop,
timing every request with `perf_counter_ns` (hey reports latency only to 0.1 ms,
too coarse for a ~1 ms p50). Both arms thus run at the same instants: other work
on a shared machine hits them alike, where arms run one after the other swing
by 2x and more on a loaded 2-core host. A shadow run of a second pack (another
network on the same data) runs on server a for the first half of the time and
on server b for the second (a crossover: a difference between the two slots
cancels); `--control` starts none (the noise floor). Each arm lasts `seconds`.

It prints one JSON summary: p50 and p95 per arm, the p50 ratio (shadow / none)
of all requests, the ratio of each half and their geometric mean (the
crossover ratio), each shadow run's own counts (rows seen should be about
`sample-rate` of its arm's requests) and the load average.
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


def _client(
    urls: list[str], bodies: list[bytes], seconds: float, first: int, out: Any
) -> None:
    """One keep-alive connection per server, requests alternating between them,
    closed-loop; sends the latencies (ns) per server to `out`."""
    conns = []
    for url in urls:
        host, port = url.removeprefix("http://").split(":")
        conns.append(http.client.HTTPConnection(host, int(port), timeout=30))
    headers = {"Content-Type": "application/json"}
    latencies: list[list[int]] = [[] for _ in urls]
    errors = 0
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        body = bodies[(i // len(urls)) % len(bodies)]
        k = (i + first) % len(urls)
        i += 1
        t0 = time.perf_counter_ns()
        conns[k].request("POST", "/predict", body, headers)
        response = conns[k].getresponse()
        response.read()
        latencies[k].append(time.perf_counter_ns() - t0)
        errors += response.status != 200
    for conn in conns:
        conn.close()
    out.put((latencies, errors))


def paired_load(
    urls: list[str], bodies: list[bytes], seconds: float, connections: int
) -> tuple[list[np.ndarray], int]:
    """Latencies (ns) per server, in the order sent, and the failed requests."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(urls, bodies, seconds, c % len(urls), out))
        for c in range(connections)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    per_server = [
        np.concatenate([np.array(r[0][k], dtype=np.int64) for r in results])
        for k in range(len(urls))
    ]
    return per_server, sum(r[1] for r in results)


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
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--sample-rate", type=float, default=0.1)
    parser.add_argument(
        "--control", action="store_true", help="no shadow run on either server"
    )
    args = parser.parse_args()

    from concurrent.futures import ThreadPoolExecutor

    from packs.build_default import build_default_pack

    work = Path(tempfile.mkdtemp(prefix="shadow-bench-"))
    try:
        served, candidate = work / "packs" / "served", work / "packs" / "candidate"
        build_default_pack(served)
        build_default_pack(candidate, hidden=(32,))

        def start(name: str) -> Any:
            return start_service(
                work / name,
                served,
                ready_timeout_s=300,
                FLYWHEEL_SECURITY__ADMIN_TOKEN=ADMIN_TOKEN,
                FLYWHEEL_MONITORING__DRIFT_INTERVAL_S="0",
            )

        with ThreadPoolExecutor(2) as pool:
            servers = list(pool.map(start, ["a", "b"]))
        try:
            urls = [svc.url for svc in servers]
            bodies = [
                json.dumps({"instances": [p.features]}).encode()
                for p in penguins()[::7]
            ]
            paired_load(urls, bodies, 3.0, args.connections)  # warm-up
            body = {"pack_dir": str(candidate), "sample_rate": args.sample_rate}
            shadow_parts: list[np.ndarray] = []
            none_parts: list[np.ndarray] = []
            halves, runs, errors = [], [], 0
            started = time.monotonic()
            # Crossover: the shadow run on server a for the first half, on b for
            # the second, so that any difference between the two slots cancels.
            for k in (0, 1):
                if not args.control:
                    _admin(urls[k], "POST", body)
                    time.sleep(2.0)  # the worker polls the run every second
                latencies, failed = paired_load(
                    urls, bodies, args.seconds / 2, args.connections
                )
                errors += failed
                if not args.control:
                    runs.append(_admin(urls[k], "DELETE"))
                shadow, none = latencies[k], latencies[1 - k]
                shadow_parts.append(shadow)
                none_parts.append(none)
                halves.append(float(np.median(shadow) / np.median(none)))
            wall_s = time.monotonic() - started
            shadow, none = np.concatenate(shadow_parts), np.concatenate(none_parts)
            p50 = {"shadow": np.median(shadow) / 1e6, "none": np.median(none) / 1e6}
            summary = {
                "figure": "shadow_p50",
                "control": args.control,
                "seconds_per_arm": args.seconds,
                "wall_s": round(wall_s, 1),
                "connections": args.connections,
                "sample_rate": args.sample_rate,
                "requests": {"shadow": len(shadow), "none": len(none)},
                "errors": errors,
                "p50_ms": p50,
                "p95_ms": {
                    "shadow": np.percentile(shadow, 95) / 1e6,
                    "none": np.percentile(none, 95) / 1e6,
                },
                "p50_ratio_shadow_over_none": p50["shadow"] / p50["none"],
                "half_p50_ratios": [round(x, 3) for x in halves],
                "crossover_p50_ratio": float(np.sqrt(halves[0] * halves[1])),
                "shadow_runs": [
                    {
                        k: run[k]
                        for k in (
                            "rows_seen",
                            "rows_dropped",
                            "agreement",
                            "candidate_latency_ms_per_row",
                        )
                    }
                    for run in runs
                ],
                "loadavg": os.getloadavg(),
            }
            print(json.dumps(summary, default=float), flush=True)
        finally:
            for svc in servers:
                stop_service_process(svc.process)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
