"""Several replicas on one PostgreSQL store and one shared log directory, in one run:

    python -m loadtests.replicas [--replicas 3] [--workers 2] [--duration 20]
        [--connections 16]

Starts `--replicas` real services (`service.cli serve`, own data dirs, BentoML
homes and ports; one fresh database on the PostgreSQL server at `--server`; one
prediction-log directory and one pack directory for all), warms each up, then
drives single-row POST /predict with wrk in phases of `--duration` seconds:

- `one_replica`: the first replica alone, all connections on it;
- `all_replicas`: every replica at once (one wrk each, connections split);
- `reports`: POST /report for a logged prediction on the first replica (a log
  lookup by id and one row written in the database per request; the database's
  size and its reports table's are given at the end);
- `drift_under_load`: the first replica under load while one drift run
  (`monitoring.cli drift`, the job the replicas' lease schedules) compares the
  newest 100,000 rows of the shared log (first logged from the training data, in
  1,000-row requests) with the reference, on the same machine.

Each phase gives req/s per replica and in total, errors, p99, the cores each
replica's processes used and req/s per core used, the bytes the replicas wrote
to storage per request (`/proc/<pid>/io`: the log's appends and compaction), and
what the database did meanwhile (commits, rows inserted and updated, per second,
from `pg_stat_database`). At the end, once the
log's segments are compacted, it compares the rows in the log with the answers
(none lost, none twice) and gives bytes per row. Prints one JSON object with the
load average before and after; the database is dropped at the end. Needs wrk
(`loadtests/install_tools.sh`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from sqlalchemy.engine import make_url

from loadtests.benchmark import ensure_pack
from loadtests.loadgen import LoadResult, wrk
from loadtests.payloads import fixed_bodies
from service.process import (
    ROOT,
    ServiceProcess,
    start_service,
    stop_service_process,
)

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ADMIN_TOKEN = "replica-load-token-0123456789"
#: Segments close this soon, so the run ends with the log compacted to Parquet.
ROTATE_AGE_S = 5.0
#: Rows the drift run compares with the reference (filled from training data).
DRIFT_WINDOW_ROWS = 100_000


def _conninfo(url: str) -> str:
    u = make_url(url)
    return (
        f"host={u.host or '127.0.0.1'} port={u.port or 5432} "
        f"user={u.username or 'postgres'} dbname={u.database or 'postgres'}"
    )


def _create_database(server: str) -> str:
    name = f"replica_load_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_conninfo(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def _drop_database(server: str, url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(_conninfo(server), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _db_counters(server: str, url: str) -> dict[str, int]:
    """Cumulative commits and row writes of the replicas' database."""
    name = make_url(url).database
    with psycopg.connect(_conninfo(server), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted "
            "FROM pg_stat_database WHERE datname = %s",
            (name,),
        ).fetchone()
    assert row is not None
    return dict(zip(("commits", "inserted", "updated", "deleted"), row, strict=True))


def _db_size(server: str, url: str) -> dict[str, int]:
    """The database's size and what it holds that grows with use."""
    name = make_url(url).database
    with psycopg.connect(_conninfo(server), autocommit=True) as conn:
        size = conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        reports = conn.execute("SELECT count(*) FROM reports").fetchone()
        table = conn.execute("SELECT pg_total_relation_size('reports')").fetchone()
    assert size is not None and reports is not None and table is not None
    return {
        "database_bytes": int(size[0]),
        "reports": int(reports[0]),
        "reports_table_bytes": int(table[0]),
    }


def _log_files(log_dir: Path) -> dict[str, int]:
    wal = [p for p in log_dir.rglob("wal_*") if p.is_file()]
    parquet = [p for p in log_dir.rglob("seg_*") if p.is_file()]
    return {
        "wal_files": len(wal),
        "wal_bytes": sum(p.stat().st_size for p in wal),
        "parquet_files": len(parquet),
        "parquet_bytes": sum(p.stat().st_size for p in parquet),
    }


def _log_size(log_dir: Path, answered: int, wait_s: float) -> dict[str, Any]:
    """The shared log once compacted (waiting up to `wait_s`): its rows against
    the rows answered (wrk counts no request still in flight when it stops, so
    the log may hold up to one more row per connection and phase), distinct ids,
    files and bytes per row."""
    from feedback.log_reader import PredictionLogReader

    deadline = time.monotonic() + wait_s
    files = _log_files(log_dir)
    while files["wal_files"] and time.monotonic() < deadline:
        time.sleep(1)
        files = _log_files(log_dir)
    reader = PredictionLogReader(log_dir)
    since = datetime.now(UTC) - timedelta(days=1)
    rows = reader.count_since(since)
    table = reader.rows_since(since, columns=["id"])
    ids = table["id"].to_pylist() if "id" in table.column_names else []
    total = files["wal_bytes"] + files["parquet_bytes"]
    return {
        "answered_rows": answered,
        "rows": rows,
        "distinct_ids": len(set(ids)),
        **files,
        "bytes_per_row": round(total / rows, 1) if rows else 0.0,
        "parquet_bytes_per_row": round(files["parquet_bytes"] / rows, 1)
        if rows and not files["wal_files"]
        else None,
    }


def _disk_written(services: list[ServiceProcess]) -> int:
    """Bytes the replicas' processes have sent to storage so far (the log's
    appends and its compaction, mostly), from /proc/<pid>/io."""
    total = 0
    for svc in services:
        try:
            root = psutil.Process(svc.process.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                total += proc.io_counters().write_bytes
            except (psutil.Error, AttributeError):
                continue
    return total


def _drive(
    targets: list[ServiceProcess], body: Path, connections: int, duration_s: float
) -> list[LoadResult]:
    results: list[LoadResult | None] = [None] * len(targets)
    per_target = max(1, connections // len(targets))

    def one(i: int) -> None:
        results[i] = wrk(
            f"{targets[i].url}/{_path(body)}",
            body,
            connections=per_target,
            duration_s=duration_s,
            server_pid=targets[i].process.pid,
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(targets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


def _path(body: Path) -> str:
    """Bodies are named after their route: `predict.json`, `report.json`."""
    return body.stem


def _phase(
    results: list[LoadResult],
    db: dict[str, int],
    db_after: dict[str, int],
    disk_bytes: int,
) -> dict[str, Any]:
    seconds = max(r.seconds for r in results)
    requests = sum(r.requests for r in results)
    cores = sum(r.server_cores for r in results)
    return {
        "req_s_per_replica": [round(r.rps, 1) for r in results],
        "req_s_total": round(sum(r.rps for r in results), 1),
        "requests": sum(r.requests for r in results),
        "errors": sum(r.errors for r in results),
        "p99_ms_worst": max(r.p99_ms for r in results),
        "cores_per_replica": [round(r.server_cores, 2) for r in results],
        "req_s_per_core": round(sum(r.rps for r in results) / cores, 1)
        if cores
        else None,
        "disk_bytes_per_request": round(disk_bytes / requests, 1) if requests else None,
        "cores_outside_replicas": round(min(r.background_cores for r in results), 2),
        "db_per_s": {
            k: round((db_after[k] - db[k]) / seconds, 1) for k in db if seconds
        },
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def _measure(
    targets: list[ServiceProcess],
    body: Path,
    connections: int,
    duration_s: float,
    counters: Any,
) -> dict[str, Any]:
    before, disk = counters(), _disk_written(targets)
    results = _drive(targets, body, connections, duration_s)
    return _phase(results, before, counters(), _disk_written(targets) - disk)


def _drift_command(svc: ServiceProcess, pack: Path, work: Path) -> list[str]:
    env = svc.env
    return [
        sys.executable,
        "-m",
        "monitoring.cli",
        "drift",
        "--db",
        env["FLYWHEEL_FEEDBACK__DATABASE_URL"],
        "--log-dir",
        env["FLYWHEEL_PREDICTION_LOG__DIR"],
        "--pack",
        str(pack),
        "--out",
        str(work / "drift"),
        "--workspace",
        str(work / "evidently"),
        "--window-rows",
        str(DRIFT_WINDOW_ROWS),
    ]


def _drift_under_load(
    svc: ServiceProcess,
    pack: Path,
    work: Path,
    body: Path,
    connections: int,
    duration_s: float,
    counters: Any,
) -> dict[str, Any]:
    """Load on `svc` while one drift run reads the shared log."""
    started = time.monotonic()
    before, disk = counters(), _disk_written([svc])
    drift = subprocess.Popen(
        _drift_command(svc, pack, work),
        cwd=ROOT,
        env=svc.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    results = _drive([svc], body, connections, duration_s)
    phase = _phase(results, before, counters(), _disk_written([svc]) - disk)
    try:
        out, _ = drift.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        drift.kill()
        out, _ = drift.communicate()
    phase["drift_run_s"] = round(time.monotonic() - started, 1)
    phase["drift_exit"] = drift.returncode
    phase["drift_output_tail"] = out[-400:]
    return phase


def _fill_log(svc: ServiceProcess, rows: int) -> int:
    """Log `rows` rows drawn from the training data (1,000 per request), so the
    drift run has a real window to compare: the load's one repeated body alone is
    one distinct row, which the drift job skips as no evidence."""
    from monitoring.traffic import instances, like_training

    done = 0
    with httpx.Client(base_url=svc.url, timeout=60) as c:
        for seed in range(rows // 1000):
            batch = instances(like_training(1000, seed=seed))
            c.post("/predict", json={"instances": batch}).raise_for_status()
            done += 1000
    return done


def _logged_prediction(svc: ServiceProcess, body: bytes, work: Path) -> Path:
    """A report body for a prediction `svc` just answered (and logged)."""
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        answer = c.post(
            "/predict", content=body, headers={"Content-Type": "application/json"}
        )
        answer.raise_for_status()
    prediction_id = answer.json()["predictions"][0]["prediction_id"]
    path = work / "report.json"
    path.write_text(json.dumps({"prediction_id": prediction_id, "comment": "load"}))
    return path


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="replica-load-"))
    pack = ensure_pack(args.pack, work)
    single = fixed_bodies()["single"]
    body = work / "predict.json"
    body.write_bytes(single)
    db = _create_database(args.server)
    services: list[ServiceProcess] = []
    load_before = [round(x, 2) for x in os.getloadavg()]

    def counters() -> dict[str, int]:
        return _db_counters(args.server, db)

    try:
        env = {
            "FLYWHEEL_FEEDBACK__DATABASE_URL": db,
            "FLYWHEEL_PREDICTION_LOG__DIR": str(work / "shared-log"),
            "FLYWHEEL_PREDICTION_LOG__ROTATE_AGE_S": str(ROTATE_AGE_S),
            "FLYWHEEL_DEPLOYMENT__SHARED_PACKS_DIR": str(work / "shared-packs"),
            "FLYWHEEL_SERVING__WORKERS": str(args.workers),
            "FLYWHEEL_MONITORING__DRIFT_INTERVAL_S": "0",
            "FLYWHEEL_FEEDBACK__REPORT_RATE_PER_MINUTE": "100000000",
            "FLYWHEEL_SECURITY__ADMIN_TOKEN": ADMIN_TOKEN,
        }
        for i in range(args.replicas):
            services.append(
                start_service(
                    work / f"replica-{i}",
                    pack,
                    port=None,
                    ready_timeout_s=300,
                    **env,  # type: ignore[arg-type]
                )
            )
        answered = 0
        for svc in services:  # first requests pay lazy imports and pools
            warm = wrk(f"{svc.url}/predict", body, connections=4, duration_s=2)
            answered += warm.requests - warm.errors
        phases: dict[str, Any] = {}
        phases["one_replica"] = _measure(
            services[:1], body, args.connections, args.duration, counters
        )
        phases["all_replicas"] = _measure(
            services, body, args.connections, args.duration, counters
        )
        for name in ("one_replica", "all_replicas"):
            answered += phases[name]["requests"] - phases[name]["errors"]
        report = _logged_prediction(services[0], single, work)
        answered += 1
        phases["reports"] = _measure(
            services[:1], report, 8, min(args.duration, 10.0), counters
        )
        answered += _fill_log(services[0], DRIFT_WINDOW_ROWS)
        phases["drift_under_load"] = _drift_under_load(
            services[0], pack, work, body, args.connections, args.duration, counters
        )
        answered += (
            phases["drift_under_load"]["requests"]
            - phases["drift_under_load"]["errors"]
        )
        one = phases["one_replica"]["req_s_total"]
        return {
            "replicas": args.replicas,
            "workers_per_replica": args.workers,
            "connections": args.connections,
            "duration_s": args.duration,
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            **phases,
            "all_over_one": round(phases["all_replicas"]["req_s_total"] / one, 2)
            if one
            else None,
            "shared_log": _log_size(
                work / "shared-log", answered, wait_s=4 * ROTATE_AGE_S + 30
            ),
            "database": _db_size(args.server, db),
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        for svc in services:
            stop_service_process(svc.process)
        _drop_database(args.server, db)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--server", default=SERVER, help="PostgreSQL server URL")
    parser.add_argument("--pack", type=Path, help="model pack (default: built)")
    args = parser.parse_args(argv)
    if args.replicas < 1 or args.workers < 1 or args.duration <= 0:
        parser.error("--replicas and --workers must be >= 1, --duration > 0")
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
