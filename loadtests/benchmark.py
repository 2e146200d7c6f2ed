"""The one-run benchmark: raw onnxruntime, guardrails, bare BentoML services and the
full service, on the same model, side by side.

    .venv/bin/python -m loadtests.benchmark          # ~6.5 min: loadtests/RESULTS.md
    .venv/bin/python -m loadtests.benchmark --quick  # ~2.5 min: loadtests/results/

Needs wrk and hey (`loadtests/install_tools.sh`). Everything runs on 127.0.0.1 in a
temporary directory (servers' BentoML homes, the full service's SQLite store),
removed at the end unless `--keep`. See `loadtests/RESULTS.md` for what is measured
and how to read it; the generated part of that file is replaced on each full run,
the analysis around it is kept.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests import httpruns, inprocess, report, servers
from loadtests.loadgen import LoadResult, require_tools
from loadtests.payloads import (
    Penguin,
    fixed_bodies,
    instances_body,
    split_by_service,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "loadtests" / "RESULTS.md"
QUICK_RESULTS = ROOT / "loadtests" / "results" / "RESULTS-quick.md"
POLICY = ROOT / "policies" / "default.yaml"
CONNECTIONS = (1, 16, 64)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_pack(pack: Path | None, work: Path) -> Path:
    from packs.build_default import build_default_pack
    from packs.format import METADATA_FILE

    if pack is not None:
        return pack
    default = ROOT / "data" / "packs" / "penguins"
    if (default / METADATA_FILE).is_file():
        return default
    log("building the default penguin pack ...")
    out = work / "pack"
    build_default_pack(out)
    return out


def drift(rows: list[int]) -> list[dict[str, Any]]:
    """The drift job's time and peak memory, if monitoring.bench_drift exists."""
    try:
        from monitoring.bench_drift import bench
    except ImportError as exc:
        return [{"rows": n, "error": f"not measured: {exc}"} for n in rows]
    out = []
    for n in rows:
        log(f"drift job on {n:,} rows ...")
        try:
            out.append(bench(n))
        except Exception as exc:  # report, don't lose the rest of the run
            out.append({"rows": n, "error": f"failed: {exc}"})
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    duration_s = args.duration or 2.0
    started = time.time()
    code = report.code_version()  # before the servers import it
    work = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    running: dict[str, servers.Server] = {}
    try:
        measured = _measure(args, work, running, repeats, duration_s)
    finally:
        for server in running.values():
            servers.stop(server)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")
    return {
        "started": datetime.fromtimestamp(started, UTC),
        "seconds": time.time() - started,  # the drift job below is timed on its own
        "code": code,
        "quick": quick,
        "repeats": repeats,
        "duration_s": duration_s,
        "pinned": args.pin,
        **measured,
        "drift": drift(_drift_rows(args)),
    }


def _measure(
    args: argparse.Namespace,
    work: Path,
    running: dict[str, servers.Server],
    repeats: int,
    duration_s: float,
) -> dict[str, Any]:
    """Everything measured with the servers up. Servers go into `running` as they
    start, so that the caller stops them even if a later one fails."""
    server_cpu, load_cpu = (0, 1) if args.pin else (None, None)
    names = _server_names(args)
    pack = ensure_pack(args.pack, work)
    log(f"pack {pack}; starting {', '.join(names)} ...")
    for name in names:
        running[name] = servers.start(name, work, pack, cpu=server_cpu)
    for server in running.values():
        servers.wait_ready(server)
    if "full" in running:
        pool, rejected = split_by_service(running["full"].url)
    else:
        pool, rejected = None, []
    bodies_dir, bodies = write_bodies(work, pool)
    in_process = _in_process(work, pack, bodies_dir, quick=args.quick)
    results, crosscheck = _http(
        names,
        running,
        bodies,
        repeats=repeats,
        duration_s=duration_s,
        cpu=load_cpu,
        quick=args.quick,
    )
    mixed, log_counters = _reports_under_load(
        running, pool, bodies, duration_s=duration_s, cpu=load_cpu
    )
    return {
        "pack": pack,
        "rejected_rows": rejected,
        "in_process": in_process,
        "http": results,
        "crosscheck": crosscheck,
        "mixed": mixed,
        "log_counters": log_counters,
    }


def _server_names(args: argparse.Namespace) -> list[str]:
    names: list[str] = args.servers or list(servers.SERVERS)
    if args.variants:
        names += [v for v in servers.VARIANTS if v not in names]
    return names


def write_bodies(
    work: Path, pool: list[Penguin] | None
) -> tuple[Path, dict[str, Path]]:
    """The fixed request bodies as files, which wrk and hey post."""
    bodies_dir = work / "bodies"
    bodies_dir.mkdir()
    bodies = {}
    for name, data in fixed_bodies(pool).items():
        bodies[name] = bodies_dir / f"{name}.json"
        bodies[name].write_bytes(data)
    return bodies_dir, bodies


def _in_process(
    work: Path, pack: Path, bodies_dir: Path, *, quick: bool
) -> dict[str, Any]:
    log("in-process measurements (onnxruntime, guardrails, service code, log)")
    env = servers.server_env("inprocess", work, pack)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(work / "inprocess" / "prometheus")
    Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True)
    return inprocess.measure_in_subprocess(
        pack, POLICY, work / "inprocess", bodies_dir, quick=quick, env=env
    )


def _http(
    names: list[str],
    running: dict[str, servers.Server],
    bodies: dict[str, Path],
    *,
    repeats: int,
    duration_s: float,
    cpu: int | None,
    quick: bool,
) -> tuple[list[httpruns.CellResult], list[tuple[str, int, LoadResult]]]:
    """Every HTTP cell with wrk, then hey's latency cross-check."""
    cells = httpruns.plan(names, CONNECTIONS)
    log(f"HTTP: {len(cells)} cells x {repeats} x {duration_s:g}s")
    results = httpruns.run_cells(
        cells,
        running,
        bodies,
        repeats=repeats,
        duration_s=duration_s,
        cpu=cpu,
        progress=log,
    )
    crosscheck = httpruns.latency_crosscheck(
        running,
        bodies["single"],
        [n for n in ("bare-tuned", "full") if n in running],
        (16,) if quick else CONNECTIONS,
        duration_s=duration_s,
        cpu=cpu,
    )
    return results, crosscheck


def _reports_under_load(
    running: dict[str, servers.Server],
    pool: list[Penguin] | None,
    bodies: dict[str, Path],
    *,
    duration_s: float,
    cpu: int | None,
) -> tuple[httpruns.MixedResult | None, dict[str, float]]:
    """Predictions while reports are filed, and the prediction log's counters
    after the whole run (only the full service has either)."""
    if "full" not in running:
        return None, {}
    sample = (pool or [])[:1000]
    mixed = httpruns.predictions_while_reporting(
        running["full"],
        bodies["single"],
        json.dumps(instances_body(sample)).encode(),
        [p.label for p in sample],
        connections=16,
        duration_s=max(duration_s, 3.0),
        cpu=cpu,
    )
    log(
        f"mixed: {mixed.predictions.rps:,.0f} req/s, "
        f"{mixed.reports_sent} reports, failures {len(mixed.report_failures)}"
    )
    running["full"].process.poll()
    return mixed, httpruns.scrape_log_counters(running["full"])


def _drift_rows(args: argparse.Namespace) -> list[int]:
    if args.no_drift:
        return []
    return args.drift_rows or ([10_000] if args.quick else [10_000, 100_000, 1_000_000])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat of 2 s")
    parser.add_argument("--repeats", type=int, help="repetitions per cell")
    parser.add_argument("--duration", type=float, help="seconds per wrk run")
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=list(servers.ALL),
        help="which servers (default: all but the variants)",
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also the full app under other serving configs (loadtests/variants.py)",
    )
    parser.add_argument("--pack", type=Path, help="model pack (default: the active)")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="servers on CPU 0, load generator on CPU 1 (taskset)",
    )
    parser.add_argument(
        "--drift-rows",
        type=int,
        nargs="*",
        help="window sizes for the drift job (default 10k 100k 1M; quick 10k)",
    )
    parser.add_argument("--no-drift", action="store_true", help="skip the drift job")
    parser.add_argument("--out", type=Path, help="results file to (re)write")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)
    require_tools()
    data = run(args)
    command = (
        "python -m loadtests.benchmark"
        + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip()
    )
    text = report.render(data, command=command)
    print(text)
    if not args.no_write:
        out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
        report.write(out, text)
        log(f"wrote {out}")


if __name__ == "__main__":
    main()
