"""Drive HTTP load with wrk (and cross-check latency with hey); parse their output.

Why wrk: on 2 cores the load generator competes with the server for CPU. wrk costs
about 0.03 s of CPU per 1,000 requests (hey 0.17 s, locust's FastHttpUser 0.2 s,
measured on these 2-core machines), so at 15k req/s it takes under half a core
where hey would take two.
It is closed-loop (each connection sends its next request when the previous answer
arrives), keeps connections alive, and its Lua hook (`post.lua`) prints the
request count, error counts and the latency histogram's percentiles in
microseconds. hey reports latency only to 0.1 ms, so it serves as a cross-check.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

LUA = Path(__file__).resolve().parent / "post.lua"


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    errors: int
    """Non-2xx answers, connect/read/write errors and timeouts."""
    p50_ms: float
    p95_ms: float
    p99_ms: float
    generator_cpu_s: float
    """CPU the load generator itself used."""
    server_cores: float
    """Average cores the server's processes used during the run."""
    background_cores: float
    """Average cores busy with anything else (other work on a shared machine)."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def require_tools() -> None:
    missing = [t for t in ("wrk", "hey") if shutil.which(t) is None]
    if missing:
        raise SystemExit(
            f"missing load generator(s) {missing}: run loadtests/install_tools.sh"
        )


def _busy_cpu_s() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def tree_cpu_s(pid: int | None) -> float:
    """CPU seconds used so far by a process and its live children."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


@dataclass(frozen=True)
class _Run:
    stdout: str
    generator_cpu_s: float
    server_cores: float
    background_cores: float


def _measured(argv: list[str], timeout_s: float, server_pid: int | None) -> _Run:
    """Run argv and account for where the machine's CPU went meanwhile."""
    busy0, own0, srv0 = _busy_cpu_s(), _children_cpu_s(), tree_cpu_s(server_pid)
    wall0 = time.perf_counter()
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    wall = time.perf_counter() - wall0
    own = _children_cpu_s() - own0
    server = tree_cpu_s(server_pid) - srv0
    background = max(_busy_cpu_s() - busy0 - own - server, 0.0)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr}")
    return _Run(done.stdout, own, server / wall, background / wall)


def wrk(
    url: str,
    body_file: Path,
    *,
    connections: int,
    duration_s: float,
    cpu: int | None = None,
    server_pid: int | None = None,
    threads: int = 1,
) -> LoadResult:
    """Closed-loop POSTs of `body_file` over `connections` keep-alive connections
    (from `threads` wrk threads: one is enough on 2 cores)."""
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        str(body_file),
    ]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    run = _measured(argv, duration_s + 30, server_pid)
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("WRKJSON "))
    s = json.loads(line.removeprefix("WRKJSON "))
    errors = s["connect"] + s["read"] + s["write"] + s["status"] + s["timeout"]
    return LoadResult(
        requests=s["requests"],
        seconds=s["duration_us"] / 1e6,
        errors=errors,
        p50_ms=s["p50_us"] / 1000,
        p95_ms=s["p95_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        generator_cpu_s=run.generator_cpu_s,
        server_cores=run.server_cores,
        background_cores=run.background_cores,
    )


def hey(
    url: str,
    body_file: Path,
    *,
    connections: int,
    duration_s: float,
    cpu: int | None = None,
    server_pid: int | None = None,
) -> LoadResult:
    """The same load with hey (percentiles to 0.1 ms): a latency cross-check."""
    argv = [
        "hey",
        "-z",
        f"{max(1, round(duration_s))}s",
        "-c",
        str(connections),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-D",
        str(body_file),
        url,
    ]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    return parse_hey(_measured(argv, duration_s + 60, server_pid))


def parse_hey(run: _Run) -> LoadResult:
    total_s = 0.0
    percentiles: dict[int, float] = {}
    ok = bad = 0
    for raw in run.stdout.splitlines():
        line = raw.strip()
        if line.startswith("Total:"):
            total_s = float(line.split()[1])
        elif "% in " in line:
            pct, _, secs, _ = line.split()
            percentiles[int(pct.rstrip("%"))] = float(secs) * 1000
        elif line.startswith("[") and "responses" in line:
            code, count = line.split()[0].strip("[]"), int(line.split()[1])
            if code.startswith("2"):
                ok += count
            else:
                bad += count
        elif line.startswith("[") and "]" in line:  # error distribution lines
            bad += int(line.split("]", 1)[0].strip("["))
    return LoadResult(
        requests=ok + bad,
        seconds=total_s,
        errors=bad,
        p50_ms=percentiles.get(50, float("nan")),
        p95_ms=percentiles.get(95, float("nan")),
        p99_ms=percentiles.get(99, float("nan")),
        generator_cpu_s=run.generator_cpu_s,
        server_cores=run.server_cores,
        background_cores=run.background_cores,
    )
