"""One-run benchmark of the prediction log, in-process (no HTTP server: on a shared
2-core machine two `bentoml serve` start-ups alone would take the time budget).

    .venv/bin/python -m loadtests.log_benchmark [--seconds 3] [--lookup-rows 10000000]

It builds one worker from the default settings (pack built if missing) in a
temporary data directory and measures, printing one JSON line per figure:

    batch_load     8 concurrent clients sending 1,000-row requests through the data
                   plane for `--seconds`: rows answered, rows in the log (read back
                   from its files), dropped = answered - logged
    reports        a report by id for a random sample of 200 answered ids: share
                   that succeed (201)
    overhead       logging on vs off (the same data plane with `NullPredictionLog`),
                   single rows and 1,000-row batches, rounds interleaved on/off so
                   that machine load hits both alike: throughput ratio off/on
    columns        column requests of 1,000 rows, parsed from JSON bytes
                   (`parse_column_request`) and answered with logging on: rows/s
    window_1m      1,000,000 rows appended as 1,000-row segments' batches, then
                   `read_prediction_window(limit_rows=1_000_000)`: seconds
                   (wall and CPU seconds: on a loaded shared machine the
                   difference is time spent waiting for a core)
    lookup         `--lookup-rows` rows written directly as compacted segments (not
                   through the service; 100,000 rows/s of traffic, 500,000-row
                   segments), then lookups by id of random logged ids
                   (the newest segment open as a write-ahead file): p50/p99 ms

Throughput here excludes HTTP; it is what the log costs the request path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")


def _emit(name: str, **figures: Any) -> dict[str, Any]:
    line = {"figure": name, **figures}
    print(json.dumps(line), flush=True)
    return line


def _worker(work: Path) -> Any:
    from monitoring.settings import MonitoringSettings
    from packs.build_default import build_default_pack
    from service.settings import Settings
    from service.wiring import build_worker

    pack = work / "pack"
    build_default_pack(pack)
    settings = Settings(
        data_dir=work / "data",
        pack_dir=pack,
        monitoring=MonitoringSettings(drift_interval_s=0),
    )
    return build_worker(settings, schedule_drift=False)


def _detached(worker: Any) -> Any:
    from service.dataplane import DataPlane
    from service.shadow import NullShadow
    from service.sinks import NullPredictionLog

    dp = worker.dataplane
    return DataPlane(
        worker.settings,
        worker.served,
        prediction_log=NullPredictionLog(),
        log_reader=dp.log_reader,
        metrics=dp.metrics,
        sessions=dp.sessions,
        shadow=NullShadow(),
    )


def _rows(n: int, seed: int) -> list[dict[str, float]]:
    """`n` penguin-like rows inside the default policy's input bounds."""
    from monitoring.traffic import instances, like_training

    return instances(like_training(n, seed=seed))  # type: ignore[no-any-return]


def _request(body: dict[str, Any]) -> Any:
    from service.schemas import PredictRequest

    return PredictRequest.model_validate(body)


def batch_load(worker: Any, seconds: float, clients: int = 8) -> dict[str, Any]:
    """`clients` threads, each with its own event loop, sending 1,000-row requests."""
    from feedback.errors import PredictionLogUnavailable

    request = _request({"instances": _rows(1000, seed=3)})
    answered: list[str] = []
    refused = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        nonlocal refused
        loop = asyncio.new_event_loop()
        try:
            while time.monotonic() < stop:
                try:
                    answer = loop.run_until_complete(worker.dataplane.predict(request))
                except PredictionLogUnavailable:  # a 503: not answered, not lost
                    with lock:
                        refused += 1
                    continue
                ids = [p["prediction_id"] for p in answer["predictions"]]
                with lock:
                    answered.extend(ids)
        finally:
            loop.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    logged = worker.dataplane.log_reader.rows_since(
        datetime.now(UTC) - timedelta(hours=1), columns=["id"]
    )
    logged_ids = set(logged["id"].to_pylist()) if logged.num_rows else set()
    return {
        "answered_rows": len(answered),
        "logged_rows": len(logged_ids & set(answered)),
        "dropped_rows": len(set(answered) - logged_ids),
        "refused_requests_503": refused,
        "rows_per_s": len(answered) / elapsed,
        "ids": answered,
    }


def reports(worker: Any, ids: list[str], n: int = 200) -> dict[str, Any]:
    from feedback.schemas import ReportCreate

    chosen = random.Random(7).sample(ids, min(n, len(ids)))
    ok = 0
    for pid in chosen:
        _, created = worker.dataplane.report(
            ReportCreate(prediction_id=pid, comment="bench"),
            idempotency_key=None,
            client=f"bench-{pid}",
            scope="bench",
        )
        ok += created
    return {"sampled": len(chosen), "succeeded": ok, "share": ok / len(chosen)}


def _rate(fn: Callable[[], int], min_s: float) -> float:
    """Rows per second of `fn` (which returns rows per call) over `min_s`."""
    rows = 0
    started = time.perf_counter()
    while True:
        rows += fn()
        elapsed = time.perf_counter() - started
        if elapsed >= min_s:
            return rows / elapsed


def overhead(worker: Any, rounds: int, round_s: float) -> dict[str, Any]:
    """Throughput with the log on and off, in interleaved rounds; the ratio of
    medians off/on (1.05 = logging costs 5%)."""
    detached = _detached(worker)
    loop = asyncio.new_event_loop()
    out: dict[str, Any] = {}
    try:
        for name, n in (("single_row", 1), ("batch_1000", 1000)):
            request = _request({"instances": _rows(n, seed=n)})
            rates: dict[str, list[float]] = {"on": [], "off": []}
            for _ in range(rounds):
                for mode, dp in (("on", worker.dataplane), ("off", detached)):
                    call = _predict_call(loop, dp, request)
                    rates[mode].append(_rate(call, round_s))
            on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
            out[name] = {
                "rows_per_s_on": on,
                "rows_per_s_off": off,
                "cost_ratio_off_over_on": off / on,
            }
    finally:
        loop.close()
    return out


def _predict_call(
    loop: asyncio.AbstractEventLoop, dataplane: Any, request: Any
) -> Callable[[], int]:
    def call() -> int:
        return len(loop.run_until_complete(dataplane.predict(request))["predictions"])

    return call


def columns(worker: Any, seconds: float) -> dict[str, Any]:
    from service.column_request import parse_column_request

    rows = _rows(1000, seed=5)
    body = orjson.dumps({"columns": {f: [r[f] for r in rows] for f in rows[0]}})
    loop = asyncio.new_event_loop()
    try:

        def one() -> int:
            request = parse_column_request(body)
            answer = loop.run_until_complete(worker.dataplane.predict(request))
            orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
            return len(answer["columns"]["prediction_id"])

        rate = _rate(one, seconds)
    finally:
        loop.close()
    return {"rows_per_request": 1000, "rows_per_s": rate}


# --- generated segments: window and lookup -----------------------------------------


def _ids_at(n: int, created_at: datetime) -> list[str]:
    """`n` prediction ids of `created_at`'s millisecond (as the service makes)."""
    millis = int(created_at.timestamp() * 1000)
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, :6] = np.frombuffer(millis.to_bytes(6, "big"), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x70
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    return np.array([raw.tobytes().hex()]).view("U32").tolist()  # type: ignore[no-any-return]


def _synthetic_batch(n: int, created_at: datetime) -> Any:
    from feedback.log_batch import LogBatch

    millis = int(created_at.timestamp() * 1000)
    ids = _ids_at(n, created_at)
    rng = np.random.default_rng(millis % 2**32)
    probabilities = rng.dirichlet([1, 1, 1], size=n).astype(np.float32)
    labels = np.array(["Adelie", "Chinstrap", "Gentoo"], dtype=object)[
        probabilities.argmax(1)
    ].tolist()
    return LogBatch(
        ids=ids,
        created_at=created_at,
        model_version="bench-v1",
        policy_version="policy-1",
        context=None,
        labels=labels,
        abstained=np.zeros(n, dtype=bool),
        reasons=[None] * n,
        probabilities=probabilities,
        inputs=rng.normal(40, 5, size=(n, 4)).astype(np.float32),
        traces=None,
        feature_names=FEATURES,
        label_names=("Adelie", "Chinstrap", "Gentoo"),
    )


def _write_segments(
    log_dir: Path, rows: int, *, per_segment: int, batch_rows: int, open_rows: int
) -> list[str]:
    """`rows` rows as compacted segments of `per_segment` rows (Arrow tables written
    as Parquet by the writer's own compaction), then `open_rows` in an open
    write-ahead segment; returns a sample of the ids written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from feedback.log_segments import schema_for, segment_name, to_record_batch
    from feedback.prediction_log import PredictionLog, WriterOptions

    template = _synthetic_batch(batch_rows, datetime.now(UTC))
    group_rows = WriterOptions().row_group_rows

    start = datetime.now(UTC) - timedelta(days=1)
    # 100,000 rows/s of traffic: a batch every batch_rows / 100 ms.
    step = timedelta(milliseconds=batch_rows / 100)
    sample_ids: list[str] = []
    t = start
    schema = None
    for s in range(0, rows, per_segment):
        parts = []
        first = t
        for _ in range(0, per_segment, batch_rows):
            # Values repeat from batch to batch; ids and times are new.
            batch = replace(template, ids=_ids_at(batch_rows, t), created_at=t)
            schema = schema or schema_for(batch)
            parts.append(to_record_batch(batch, schema))
            sample_ids.append(batch.ids[s % batch_rows])
            t += step
        table = pa.Table.from_batches(parts)
        name = segment_name(
            int(first.timestamp() * 1000), int(t.timestamp() * 1000), f"bench.{s}"
        )
        # As the writer's compaction writes them.
        pq.write_table(
            table, log_dir / name, row_group_size=group_rows, compression="snappy"
        )
    log = PredictionLog(log_dir)
    for _ in range(0, open_rows, batch_rows):
        batch = _synthetic_batch(batch_rows, datetime.now(UTC))
        log.submit_batch(batch)
        sample_ids.append(batch.ids[0])
    return sample_ids


def window_1m(work: Path) -> dict[str, Any]:
    from feedback.log_reader import PredictionLogReader
    from feedback.log_window import read_prediction_window

    log_dir = work / "window-log"
    log_dir.mkdir()
    _write_segments(
        log_dir, 1_000_000, per_segment=250_000, batch_rows=1000, open_rows=0
    )
    reader = PredictionLogReader(log_dir)
    started, cpu = time.perf_counter(), time.process_time()
    frame = read_prediction_window(reader, limit_rows=1_000_000)
    seconds = time.perf_counter() - started
    return {
        "rows": len(frame),
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
    }


def lookup(work: Path, rows: int, lookups: int = 1000) -> dict[str, Any]:
    from feedback.log_reader import PredictionLogReader

    log_dir = work / "lookup-log"
    log_dir.mkdir()
    started = time.perf_counter()
    ids = _write_segments(
        log_dir, rows, per_segment=500_000, batch_rows=10_000, open_rows=100_000
    )
    setup_s = time.perf_counter() - started
    reader = PredictionLogReader(log_dir)
    chosen = random.Random(11).choices(ids, k=lookups)
    times, cpu = [], []
    for pid in chosen:
        t, c = time.perf_counter(), time.process_time()
        found = reader.get(pid)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if found is None:
            raise RuntimeError(f"logged id {pid} not found")
    times.sort()
    cpu.sort()
    return {
        "rows_logged": rows + 100_000,
        "lookups": lookups,
        "p50_ms": times[len(times) // 2] * 1000,
        "p99_ms": times[int(len(times) * 0.99)] * 1000,
        "cpu_p50_ms": cpu[len(cpu) // 2] * 1000,
        "cpu_p99_ms": cpu[int(len(cpu) * 0.99)] * 1000,
        "setup_s": setup_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lookup-rows", type=int, default=10_000_000)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        worker = _worker(work)
        try:
            load = batch_load(worker, args.seconds)
            ids = load.pop("ids")
            _emit("batch_load", clients=8, rows_per_request=1000, **load)
            _emit("reports", **reports(worker, ids))
            _emit("overhead", **overhead(worker, args.rounds, args.seconds / 5))
            _emit("columns", **columns(worker, args.seconds))
        finally:
            worker.close()
        _emit("window_1m", **window_1m(work))
        _emit("lookup", **lookup(work, args.lookup_rows))
    _emit("total", seconds=time.perf_counter() - started)


if __name__ == "__main__":
    main()
