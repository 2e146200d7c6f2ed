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
                   single rows and 1,000-row batches, measured first (on a fresh
                   log, before the batch load leaves segments to compact), in
                   `--rounds` pairs of short on/off runs whose order alternates,
                   so that machine load hits both alike: the median over pairs of
                   the throughput ratio off/on, in wall time and in the process's
                   CPU time (all its threads: the log's own thread counts)
    overhead_app   the same through the service's own FastAPI app (`service.app`),
                   called in-process as ASGI: POST /predict bodies as bytes,
                   parsed, validated, answered and encoded as over HTTP, without
                   BentoML's middleware and the network (which would only add
                   time to both sides)
    columns        column requests of 1,000 rows, parsed from JSON bytes
                   (`parse_column_request`) and answered with logging on: rows/s
    window_1m      1,000,000 rows appended as 1,000-row segments' batches, then
                   `read_prediction_window(limit_rows=1_000_000)`: seconds
                   (wall and CPU seconds: on a loaded shared machine the
                   difference is time spent waiting for a core)
    review_1m      the same 1,000,000 rows, then one review-sampling run over
                   them into a SQLite store (`feedback.review`): seconds, items
                   queued (capped per run)
    lookup         `--lookup-rows` rows written directly as compacted segments (not
                   through the service; 100,000 rows/s of traffic, 500,000-row
                   segments), then lookups by id of random logged ids
                   (the newest segment open as a write-ahead file): p50/p99 ms

Throughput here excludes HTTP; it is what the log costs the request path. The
process's garbage collector is set up as a served worker's is (`freeze_gc`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
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
    worker = build_worker(settings, schedule_drift=False)
    if settings.serving.freeze_gc:
        # As `service.service.InferenceService` does once its worker is built:
        # without it, collections of 1,000-row answers dominate what is timed.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
    return worker


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
    return _rates(fn, min_s)[0]


def _rates(fn: Callable[[], int], min_s: float) -> tuple[float, float]:
    """Rows per wall second and per CPU second (of the whole process) of `fn`
    (which returns rows per call) over `min_s` wall seconds."""
    rows = 0
    started, cpu = time.perf_counter(), time.process_time()
    while True:
        rows += fn()
        elapsed = time.perf_counter() - started
        if elapsed >= min_s:
            return rows / elapsed, rows / max(time.process_time() - cpu, 1e-9)


def overhead(worker: Any, rounds: int, round_s: float) -> dict[str, Any]:
    """Throughput with the log on and off in `rounds` pairs of runs (on first
    in even pairs, off first in odd ones); per pair the ratio off/on, and its
    median over the pairs (1.05 = logging costs 5%)."""
    detached = _detached(worker)
    loop = asyncio.new_event_loop()
    out: dict[str, Any] = {}
    try:
        for name, n in (("single_row", 1), ("batch_1000", 1000)):
            request = _request({"instances": _rows(n, seed=n)})
            calls = {
                "on": _predict_call(loop, worker.dataplane, request),
                "off": _predict_call(loop, detached, request),
            }
            out[name] = _compare(calls, rounds, round_s)
    finally:
        loop.close()
    return out


def overhead_app(worker: Any, rounds: int, round_s: float) -> dict[str, Any]:
    """`overhead` through the service's FastAPI app (an ASGI call per request)."""
    from dataclasses import replace

    from service.app import create_app

    apps = {}
    for mode, w in (
        ("on", worker),
        ("off", replace(worker, dataplane=_detached(worker))),
    ):
        app = create_app(max_body_bytes=worker.settings.serving.max_body_bytes)
        app.state.worker = w
        apps[mode] = app
    loop = asyncio.new_event_loop()
    out: dict[str, Any] = {}
    try:
        for name, n in (("single_row", 1), ("batch_1000", 1000)):
            body = orjson.dumps({"instances": _rows(n, seed=n)})
            calls = {m: _asgi_call(loop, app, body, n) for m, app in apps.items()}
            out[name] = _compare(calls, rounds, round_s)
    finally:
        loop.close()
    return out


def _asgi_call(
    loop: asyncio.AbstractEventLoop, app: Any, body: bytes, rows: int
) -> Callable[[], int]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def one() -> int:
        received = False
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal received
            if received:
                return {"type": "http.disconnect"}
            received = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(dict(scope), receive, send)
        if status != [200]:
            raise RuntimeError(f"POST /predict answered {status}")
        return rows

    return lambda: loop.run_until_complete(one())


def _compare(
    calls: dict[str, Callable[[], int]], rounds: int, round_s: float
) -> dict[str, Any]:
    for call in calls.values():  # warm both paths up
        _rates(call, round_s / 2)
    wall: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(rounds):
        for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
            by_wall, by_cpu = _rates(calls[mode], round_s)
            wall[mode].append(by_wall)
            cpu[mode].append(by_cpu)
    return {
        "rows_per_s_on": statistics.median(wall["on"]),
        "rows_per_s_off": statistics.median(wall["off"]),
        "cost_ratio_off_over_on": _paired(wall),
        "cpu_cost_ratio_off_over_on": _paired(cpu),
        "pairs": rounds,
    }


def _paired(rates: dict[str, list[float]]) -> float:
    return statistics.median(
        off / on for on, off in zip(rates["on"], rates["off"], strict=True)
    )


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
            return len(answer["columns"]["label"])

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
    """`rows` rows as compacted segments of `per_segment` rows (written as the
    writer's compaction writes them), then `open_rows` in an open write-ahead
    segment; returns a sample of the ids written (one per batch)."""
    import pyarrow as pa

    from feedback.log_compactor import write_segment_file
    from feedback.log_sampling import with_review_columns
    from feedback.log_segments import schema_for, segment_name, to_record_batch
    from feedback.prediction_log import PredictionLog, WriterOptions

    start = datetime.now(UTC) - timedelta(days=1)
    # Values repeat from segment to segment; ids and times are new. One template
    # segment is built once, and each segment gets its own `id` and `created_at`.
    template = _synthetic_batch(per_segment, start)
    schema = schema_for(template)
    table = pa.Table.from_batches([to_record_batch(template, schema)])
    group_rows = WriterOptions().row_group_rows
    # 100,000 rows/s of traffic: a batch every batch_rows / 100 ms.
    step_us = batch_rows * 10
    t_us = int(start.timestamp() * 1_000_000)
    sample_ids: list[str] = []
    for s in range(0, rows, per_segment):
        stamps = t_us + np.arange(per_segment, dtype=np.int64) // batch_rows * step_us
        ids = _ids_of(stamps // 1000)
        sample_ids += ids[s % batch_rows :: batch_rows].to_pylist()
        segment = table.set_column(0, "id", ids).set_column(
            1, "created_at", pa.array(stamps, pa.timestamp("us", tz="UTC"))
        )
        t_us += per_segment // batch_rows * step_us
        name = segment_name(
            int(stamps[0]) // 1000, int(stamps[-1]) // 1000, f"bench.{s}"
        )
        write_segment_file(
            with_review_columns(segment), log_dir / name, row_group_rows=group_rows
        )
    log = PredictionLog(log_dir)
    for _ in range(0, open_rows, batch_rows):
        batch = _synthetic_batch(batch_rows, datetime.now(UTC))
        log.submit_batch(batch)
        sample_ids.append(batch.ids[0])
    return sample_ids


def _ids_of(millis: np.ndarray) -> Any:
    """One prediction id per millisecond in `millis`, as an Arrow string array
    (the layout of `feedback.models.new_prediction_ids`)."""
    import pyarrow as pa

    n = len(millis)
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, :6] = millis.astype(">u8").view(np.uint8).reshape(n, 8)[:, 2:]
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x70
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    offsets = np.arange(n + 1, dtype=np.int32) * 32
    data = raw.tobytes().hex().encode()
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


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


def review_1m(work: Path) -> dict[str, Any]:
    """One review-sampling run over 1,000,000 logged rows (compacted segments),
    queueing into a SQLite store: seconds, rows looked at, items queued."""
    from feedback import review
    from feedback.db import make_engine, migrate, session_factory
    from feedback.log_reader import PredictionLogReader

    log_dir = work / "review-log"
    log_dir.mkdir()
    _write_segments(
        log_dir, 1_000_000, per_segment=250_000, batch_rows=1000, open_rows=0
    )
    engine = make_engine(f"sqlite:///{work / 'review.db'}")
    migrate(engine)
    reader = PredictionLogReader(log_dir)
    since = datetime.now(UTC) - timedelta(days=2)
    try:
        with session_factory(engine)() as session:
            started, cpu = time.perf_counter(), time.process_time()
            added, _ = review.sample_review_items(
                session,
                log=reader,
                since=since,
                margin=0.2,
                sample_share=0.1,
                audit_share=0.0,
            )
            seconds = time.perf_counter() - started
            cpu_s = time.process_time() - cpu
    finally:
        engine.dispose()
    return {
        "rows": reader.count_since(since),
        "queued": added,
        "seconds": seconds,
        "cpu_seconds": cpu_s,
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
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--lookup-rows", type=int, default=10_000_000)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        worker = _worker(work)
        try:
            _emit("overhead", **overhead(worker, args.rounds, args.seconds / 20))
            _emit(
                "overhead_app", **overhead_app(worker, args.rounds, args.seconds / 20)
            )
            load = batch_load(worker, args.seconds)
            ids = load.pop("ids")
            _emit("batch_load", clients=8, rows_per_request=1000, **load)
            _emit("reports", **reports(worker, ids))
            _emit("columns", **columns(worker, args.seconds))
        finally:
            worker.close()
        _emit("window_1m", **window_1m(work))
        _emit("review_1m", **review_1m(work))
        _emit("lookup", **lookup(work, args.lookup_rows))
    _emit("total", seconds=time.perf_counter() - started)


if __name__ == "__main__":
    main()
