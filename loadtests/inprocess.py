"""In-process measurements: no HTTP, same model pack as the servers.

    onnxruntime     raw `session.run` at batch 1, 100, 1000 (µs per call, rows/s)
    guardrails      `GuardrailPipeline.run` on a model stub (guardrails alone), and
                    model + guardrails, per row, next to raw inference
    service code    what our code costs per request without any HTTP server:
                    `PredictRequest.model_validate_json` -> `DataPlane.predict` (with
                    real metrics and a real prediction log) -> `orjson.dumps`
    prediction log  sustained append rate of the write-ahead `PredictionLog` into a
                    fresh directory (1,000-row batches, as the service appends them)

It runs in a child process (`python -m loadtests.inprocess --json ...`) so that the
Prometheus client runs in multiprocess mode as it does under BentoML (the parent
sets `PROMETHEUS_MULTIPROC_DIR`), and so its memory and threads go away after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from guardrails.bench import time_call

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 100, 1000)
NUMPY = orjson.OPT_SERIALIZE_NUMPY  # as the service's JSONResponse


def _rows(pack: Any, n: int) -> np.ndarray:
    from packs.loader import load_table

    meta = pack.metadata
    test = load_table(pack.test_path())[meta.feature_names].to_numpy(np.float32)
    return np.ascontiguousarray(np.resize(test, (n, test.shape[1])))


def onnx_and_guardrails(
    pack_dir: Path, policy_path: Path, min_time_s: float
) -> tuple[str, list[dict[str, Any]]]:
    from guardrails.pipeline import GuardrailPipeline, RequestContext
    from guardrails.policy import Policy
    from packs.loader import ModelPack

    pack = ModelPack.load(pack_dir, providers=["CPUExecutionProvider"])
    meta = pack.metadata
    policy = Policy.load(policy_path)
    pipeline = GuardrailPipeline(policy, meta)
    session: Any = pack.session
    names = ([meta.output.onnx_name], meta.input.onnx_name)
    context = _first_context(policy)
    out = []
    for n in BATCHES:
        x = _rows(pack, n)
        probs = pack.predict_proba(x)

        def stub(_x: np.ndarray, probs: np.ndarray = probs) -> np.ndarray:
            return probs

        def raw(x: np.ndarray = x) -> object:
            return session.run(names[0], {names[1]: x})

        cases: list[tuple[str, Callable[[], object]]] = [
            ("onnxruntime session.run", raw),
            ("guardrails only", partial(pipeline.run, x, stub, RequestContext())),
            (
                f"guardrails only, context {context}",
                partial(pipeline.run, x, stub, RequestContext(context=context)),
            ),
            (
                "model + guardrails",
                partial(pipeline.run, x, pack.predict_proba, RequestContext()),
            ),
        ]
        for what, fn in cases:
            seconds = time_call(fn, min_time_s)
            out.append(
                {
                    "what": what,
                    "batch": n,
                    "us_per_call": seconds * 1e6,
                    "us_per_row": seconds * 1e6 / n,
                    "rows_per_s": n / seconds,
                }
            )
    return pack.provider, out


def service_code(
    pack_dir: Path, work: Path, bodies: dict[str, bytes], min_time_s: float
) -> list[dict[str, Any]]:
    """Per-request cost of our code with no HTTP server around it."""
    from feedback.log_reader import PredictionLogReader
    from monitoring.settings import MonitoringSettings
    from service.dataplane import DataPlane
    from service.schemas import PredictRequest
    from service.settings import Settings
    from service.shadow import NullShadow
    from service.sinks import NullPredictionLog
    from service.wiring import build_worker

    settings = Settings(
        data_dir=work,
        pack_dir=pack_dir,
        monitoring=MonitoringSettings(drift_interval_s=0),
    )
    worker = build_worker(settings, schedule_drift=False)
    dataplane = worker.dataplane
    # The same data plane with the log detached: what logging costs a request,
    # the writer thread's share included.
    detached = DataPlane(
        settings,
        worker.served,
        prediction_log=NullPredictionLog(),
        log_reader=PredictionLogReader(settings.prediction_log_dir),
        metrics=dataplane.metrics,
        sessions=worker.sessions,
        shadow=NullShadow(),
    )
    loop = asyncio.new_event_loop()
    out = []
    try:
        for name, raw in bodies.items():
            parsed = PredictRequest.model_validate_json(raw)
            result = loop.run_until_complete(dataplane.predict(parsed))
            rows = len(
                result["predictions"]
                if "predictions" in result
                else result["columns"]["label"]
            )

            parts: dict[str, Callable[[], object]] = {
                "parse+validate": partial(PredictRequest.model_validate_json, raw),
                "DataPlane.predict": partial(_predict, loop, dataplane, parsed),
                "orjson.dumps": partial(orjson.dumps, result, option=NUMPY),
                "all three": partial(_whole, loop, dataplane, raw),
                "DataPlane.predict, log detached": partial(
                    _predict, loop, detached, parsed
                ),
            }
            for part, fn in parts.items():
                dataplane.prediction_log.flush()  # no backlog from the last part
                seconds = time_call(fn, min_time_s)
                out.append(
                    {
                        "body": name,
                        "rows": rows,
                        "part": part,
                        "us_per_request": seconds * 1e6,
                        "rows_per_s": rows / seconds,
                    }
                )
        dataplane.prediction_log.flush()
    finally:
        worker.close()
        loop.close()
    return out


def _predict(loop: asyncio.AbstractEventLoop, dataplane: Any, parsed: Any) -> object:
    return loop.run_until_complete(dataplane.predict(parsed))


def _whole(loop: asyncio.AbstractEventLoop, dataplane: Any, raw: bytes) -> bytes:
    """What one request costs our code: parse, predict, encode."""
    from service.schemas import PredictRequest

    body = PredictRequest.model_validate_json(raw)
    return orjson.dumps(_predict(loop, dataplane, body), option=NUMPY)


def log_batches(
    pack_dir: Path, policy_path: Path, rows: int, *, context: str | None
) -> list[Any]:
    """What the service hands the log for `rows` rows in 1,000-row requests: real
    guardrail output turned into `LogBatch`es by the service's own
    `answered_batch`."""
    from feedback.log_batch import answered_batch
    from feedback.models import new_prediction_id_block
    from guardrails.batch import RequestContext
    from guardrails.build import build_pipeline
    from guardrails.policy import Policy
    from packs.loader import ModelPack

    pack = ModelPack.load(pack_dir, providers=["CPUExecutionProvider"])
    policy = Policy.load(policy_path)
    pipeline = build_pipeline(pack, policy)
    meta = pack.metadata
    x = _rows(pack, 1000)
    guarded = pipeline.run(x, pack.predict_proba, RequestContext(context=context))
    batches = []
    for _ in range(0, rows, len(x)):
        ids, ids_hex = new_prediction_id_block(len(x))
        batches.append(
            answered_batch(
                ids,
                guarded,
                x,
                context=context,
                versions=(meta.version, policy.version),
                store_inputs=policy.store_inputs,
                feature_names=tuple(meta.feature_names),
                label_names=tuple(meta.labels),
                ids_hex=ids_hex,
            )
        )
    return batches


def log_insert_rate(
    pack_dir: Path,
    policy_path: Path,
    work: Path,
    rows: int,
    *,
    context: str | None,
) -> dict[str, Any]:
    """Sustained rows/s of the prediction log's appends into a fresh directory,
    fed 1,000-row batches as the service feeds it (each append is synchronous)."""
    from feedback.prediction_log import PredictionLog

    batches = log_batches(pack_dir, policy_path, rows, context=context)
    rows = sum(map(len, batches))
    plog = PredictionLog(work / f"log-bench-{context or 'none'}").start()
    started = time.perf_counter()
    submit_s = 0.0
    for batch in batches:
        t = time.perf_counter()
        plog.submit_batch(batch)
        submit_s += time.perf_counter() - t
    flushed = plog.flush(timeout_s=300)
    seconds = time.perf_counter() - started
    plog.close(timeout_s=10)
    return {
        "backend": "arrow-wal",
        "rows": rows,
        "context": context,
        "traced_rows": sum(sum(t is not None for t in b.traces or ()) for b in batches),
        "seconds": seconds,
        "rows_per_s": plog.written_total / seconds,
        "written": plog.written_total,
        "dropped": plog.dropped_total,
        "flushed": flushed,
        "submit_us_per_row": submit_s / rows * 1e6,
    }


def measure(
    pack_dir: Path, policy_path: Path, work: Path, bodies_dir: Path, *, quick: bool
) -> dict[str, Any]:
    from guardrails.policy import Policy

    min_time_s = 0.3 if quick else 1.0
    provider, timings = onnx_and_guardrails(pack_dir, policy_path, min_time_s)
    bodies = {p.stem: p.read_bytes() for p in sorted(bodies_dir.glob("*.json"))}
    service = service_code(pack_dir, work / "runtime", bodies, min_time_s)
    log_rows = 30_000 if quick else 100_000
    log = log_insert_rate(pack_dir, policy_path, work, log_rows, context=None)
    log_context = log_insert_rate(
        pack_dir,
        policy_path,
        work,
        log_rows,
        context=_first_context(Policy.load(policy_path)),
    )
    return {
        "provider": provider,
        "timings": timings,
        "service_code": service,
        "log": log,
        "log_context": log_context,
    }


def _first_context(policy: Any) -> str | None:
    """The context the measurements with a context use: the policy's first."""
    return policy.contexts[0] if policy.contexts else None


def measure_in_subprocess(
    pack_dir: Path,
    policy_path: Path,
    work: Path,
    bodies_dir: Path,
    *,
    quick: bool,
    env: dict[str, str],
) -> dict[str, Any]:
    """`measure` in a child process with `env` (e.g. PROMETHEUS_MULTIPROC_DIR)."""
    argv = [
        sys.executable,
        "-m",
        "loadtests.inprocess",
        "--json",
        "--pack",
        str(pack_dir),
        "--policy",
        str(policy_path),
        "--work",
        str(work),
        "--bodies",
        str(bodies_dir),
    ]
    if quick:
        argv.append("--quick")
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"in-process measurements failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", required=True)
    parser.add_argument("--pack", type=Path, required=True)
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--bodies", type=Path, required=True, help="*.json bodies")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    result = measure(args.pack, args.policy, args.work, args.bodies, quick=args.quick)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
