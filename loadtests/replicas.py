"""Several replicas on one PostgreSQL store under load, in one run:

    python -m loadtests.replicas [--replicas 3] [--duration 20] [--connections 16]

Starts `--replicas` real services (`service.cli serve`, own data dirs and ports,
one fresh database on the PostgreSQL server at `--server`), then drives single-row
POST /predict with wrk: first one replica alone, then every replica at once (one
wrk per replica, the connections split between them). Prints one JSON object:
req/s per replica and in total for both phases and their ratio, errors, the rows
the shared prediction-log directory holds afterwards and its bytes per row (the
figures the capacity plan in docs/deploy.md uses). The database is dropped at
the end. Needs wrk (`loadtests/install_tools.sh`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from loadtests.benchmark import ensure_pack
from loadtests.loadgen import LoadResult, wrk
from loadtests.payloads import fixed_bodies
from service.process import ServiceProcess, start_service, stop_service_process

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ADMIN_TOKEN = "replica-load-token-0123456789"


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


def _log_size(log_dir: Path) -> dict[str, float]:
    """Rows in the shared log directory and the bytes its files take, split by
    kind (write-ahead Arrow segments, compacted Parquet)."""
    from datetime import UTC, datetime, timedelta

    from feedback.log_reader import PredictionLogReader

    rows = PredictionLogReader(log_dir).count_since(
        datetime.now(UTC) - timedelta(days=1)
    )
    wal = sum(p.stat().st_size for p in log_dir.glob("wal_*"))
    parquet = sum(p.stat().st_size for p in log_dir.glob("seg_*"))
    return {
        "rows": rows,
        "wal_bytes": wal,
        "parquet_bytes": parquet,
        "bytes_per_row": round((wal + parquet) / rows, 1) if rows else 0.0,
    }


def _drive(
    targets: list[ServiceProcess], body: Path, connections: int, duration_s: float
) -> list[LoadResult]:
    results: list[LoadResult | None] = [None] * len(targets)
    per_target = max(1, connections // len(targets))

    def one(i: int) -> None:
        results[i] = wrk(
            f"{targets[i].url}/predict",
            body,
            connections=per_target,
            duration_s=duration_s,
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(targets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


def _phase(results: list[LoadResult]) -> dict[str, Any]:
    return {
        "req_s_per_replica": [round(r.rps, 1) for r in results],
        "req_s_total": round(sum(r.rps for r in results), 1),
        "errors": sum(r.errors for r in results),
        "p99_ms_worst": max(r.p99_ms for r in results),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="replica-load-"))
    pack = ensure_pack(args.pack, work)
    body = work / "single.json"
    body.write_bytes(fixed_bodies()["single"])
    db = _create_database(args.server)
    services: list[ServiceProcess] = []
    try:
        env = {
            "FLYWHEEL_FEEDBACK__DATABASE_URL": db,
            "FLYWHEEL_PREDICTION_LOG__DIR": str(work / "shared-log"),
            "FLYWHEEL_SERVING__WORKERS": str(args.workers),
            "FLYWHEEL_MONITORING__DRIFT_INTERVAL_S": "0",
            "FLYWHEEL_SECURITY__ADMIN_TOKEN": ADMIN_TOKEN,
        }
        for i in range(args.replicas):
            svc = start_service(
                work / f"replica-{i}",
                pack,
                port=None,
                ready_timeout_s=300,
                **env,  # type: ignore[arg-type]
            )
            services.append(svc)
        alone = _phase(_drive(services[:1], body, args.connections, args.duration))
        together = _phase(_drive(services, body, args.connections, args.duration))
        time.sleep(2)
        return {
            "replicas": args.replicas,
            "workers_per_replica": args.workers,
            "connections": args.connections,
            "duration_s": args.duration,
            "one_replica": alone,
            "all_replicas": together,
            "all_over_one": round(together["req_s_total"] / alone["req_s_total"], 2)
            if alone["req_s_total"]
            else None,
            "shared_log": _log_size(work / "shared-log"),
        }
    finally:
        for svc in services:
            stop_service_process(svc.process)
        _drop_database(args.server, db)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--server", default=SERVER, help="PostgreSQL server URL")
    parser.add_argument("--pack", type=Path, help="model pack (default: built)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
