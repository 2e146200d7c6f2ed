"""Where the full service's time goes per request: py-spy on the worker under load.

    .venv/bin/pip install py-spy      # not a project dependency: a measuring tool
    .venv/bin/python -m loadtests.profile_service [--body single] [--seconds 15]

Starts the full service (its own temp data dir), drives it with wrk at 16
connections, samples the BentoML worker with py-spy (all non-idle threads,
`--nonblocking` so sampling does not stop the process), and attributes every
sample to one layer: walking the stack from the innermost frame outwards, the
first frame that belongs to a known layer wins, so each layer's share is its own
("self") time and the shares add up to 100%. Removing a layer would save about its
share. `--raw FILE` keeps py-spy's collapsed stacks for a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from loadtests import servers
from loadtests.loadgen import wrk
from loadtests.payloads import fixed_bodies, split_by_service

# A sample belongs to the first of THREADS that any of its frames matches (whole
# threads, or functions whose inner frames are anonymous), else to the layer of its
# innermost frame that matches one of LAYERS. A rule is
# (layer, path substrings, function names or None for any).
Rule = tuple[str, tuple[str, ...], tuple[str, ...] | None]
THREADS: list[Rule] = [
    ("prediction log: writer thread", ("feedback/prediction_log.py",), ("_run",)),
    (
        "prediction log: compaction thread",
        ("feedback/prediction_log.py",),
        ("_run_compaction",),
    ),
    ("background threads (watchers, priors)", ("service/jobs.py",), ("loop",)),
    ("POST /report handling", ("service/report_routes.py",), None),
    # Its comprehensions are frames of their own: match the enclosing function.
    ("row-form answer encoding", ("service/encoding.py",), ("rows_answer",)),
    ("prediction log: handing over", ("feedback/log_batch.py",), ("answered_batch",)),
]
LAYERS: list[Rule] = [
    ("onnxruntime", ("/onnxruntime/",), None),
    ("guardrails pipeline", ("/guardrails/",), None),
    ("prediction log: submit", ("feedback/prediction_log.py",), None),
    ("prediction ids", ("feedback/models.py",), None),
    ("our metrics (monitoring/, prometheus_client mmap)", ("/monitoring/",), None),
    ("decode_features", ("service/decode.py",), None),
    ("column answer encoding", ("service/encoding.py",), None),
    ("DataPlane.predict: timers, ids", ("service/dataplane.py",), None),
    ("JSON encoding (orjson response)", ("service/responses.py",), None),
    ("pydantic request parsing", ("/pydantic/", "service/schemas.py"), None),
    ("our route + RequestLimits middleware", ("service/",), None),
    ("BentoML OpenTelemetry middleware", ("/opentelemetry/",), None),
    (
        "BentoML traffic-metrics middleware",
        ("bentoml/_internal/server/http/instruments.py",),
        None,
    ),
    ("BentoML other (context, timeout, lifecycle)", ("bentoml",), None),
    ("FastAPI routing + response layer", ("/fastapi/",), None),
    ("Starlette routing, exception, middleware layers", ("/starlette/",), None),
    ("uvicorn HTTP protocol (httptools)", ("/uvicorn/",), None),
    ("asyncio event loop, socket I/O", ("/asyncio/", "selectors.py"), None),
]


def _split(frame: str) -> tuple[str, str]:
    """`function (path:line)` -> (function, path)."""
    func, _, rest = frame.partition(" (")
    return func.rpartition(".")[2], rest.rpartition(":")[0]


def _matches(rule: Rule, func: str, path: str) -> bool:
    _, paths, funcs = rule
    return any(p in path for p in paths) and (funcs is None or func in funcs)


def layer_of(stack: list[str]) -> str:
    frames = [_split(f) for f in stack]
    for rule in THREADS:
        if any(_matches(rule, func, path) for func, path in frames):
            return rule[0]
    for func, path in reversed(frames):
        for rule in LAYERS:
            if _matches(rule, func, path):
                return rule[0]
    return "other (stdlib, threads)"


def attribute(raw_lines: list[str]) -> tuple[int, collections.Counter[str]]:
    shares: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_lines:
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        shares[layer_of(stack.split(";"))] += n
    return total, shares


def worker_pid(server: servers.Server) -> int:
    if servers.ALL[server.name][1].startswith("uvicorn:"):
        return server.pid
    for child in psutil.Process(server.pid).children(recursive=True):
        if "_bentoml_impl.worker" in " ".join(child.cmdline()):
            return child.pid
    raise RuntimeError("no BentoML worker process found")


def profile(
    name: str,
    body: str,
    seconds: float,
    connections: int,
    rate: int,
    raw: Path | None,
    gil: bool = False,
) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    work = Path(tempfile.mkdtemp(prefix="flywheel-profile-"))
    pack = Path(__file__).resolve().parent.parent / "data" / "packs" / "penguins"
    server = servers.start(name, work, pack)
    try:
        servers.wait_ready(server)
        pool, _ = split_by_service(server.url)
        body_file = work / f"{body}.json"
        body_file.write_bytes(fixed_bodies(pool)[body])
        url = f"{server.url}/predict"
        wrk(url, body_file, connections=connections, duration_s=2)  # warm-up
        unprofiled = wrk(
            url, body_file, connections=connections, duration_s=5, server_pid=server.pid
        )
        out = work / "profile.txt"
        loaded: dict[str, object] = {}

        def load() -> None:
            loaded["r"] = wrk(
                url, body_file, connections=connections, duration_s=seconds + 3
            )

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(1.5)
        argv = [spy, "record", "-p", str(worker_pid(server)), "-d", str(round(seconds))]
        argv += ["-r", str(rate), "-f", "raw", "-o", str(out), "--nonblocking"]
        argv.append("--full-filenames")
        if gil:  # only the thread holding the GIL: Python CPU, no GIL waits
            argv.append("--gil")
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"py-spy failed: {done.stderr[-2000:]}")
        thread.join()
        lines = out.read_text().splitlines()
        if raw is not None:
            shutil.copy(out, raw)
    finally:
        servers.stop(server)
        shutil.rmtree(work, ignore_errors=True)
    total, shares = attribute(lines)
    during = loaded["r"]
    rows = [
        f"Server `{name}`, body `{body}`, wrk at {connections} connections: "
        f"{unprofiled.rps:,.0f} req/s unprofiled, {during.rps:,.0f} req/s "  # type: ignore[attr-defined]
        f"while py-spy sampled at {rate} Hz for {seconds:g} s ({total:,} samples).",
        "",
        "| layer (self time) | share of worker CPU samples | ≈ µs per request |",
        "|---|---:|---:|",
    ]
    # CPU the server used per request, unprofiled (worker + BentoML's arbiter).
    per_request_us = unprofiled.server_cores * 1e6 / unprofiled.rps
    for layer, n in shares.most_common():
        share = n / total
        rows.append(f"| {layer} | {share:.1%} | {share * per_request_us:,.0f} |")
    rows.append(
        f"\nµs per request = share × server CPU per request unprofiled "
        f"({per_request_us:,.0f} µs: {unprofiled.server_cores:.2f} cores at "
        f"{unprofiled.rps:,.0f} req/s): about what removing the layer would save."
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="full", choices=list(servers.ALL))
    parser.add_argument(
        "--body",
        default="single",
        choices=["single", "single_context", "batch1000", "columns1000"],
    )
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples/s")
    parser.add_argument("--raw", type=Path, help="keep the collapsed stacks here")
    parser.add_argument(
        "--gil", action="store_true", help="sample only the thread holding the GIL"
    )
    args = parser.parse_args(argv)
    print(
        profile(
            args.server, args.body, args.seconds, args.connections, args.rate, args.raw
        )
    )


if __name__ == "__main__":
    main()
