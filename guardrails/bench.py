"""Micro-benchmark: the guardrail pipeline's cost per row next to raw ONNX
inference, at batch sizes 1 and 1000 (time.perf_counter, many calls, median of
several repeats). "guardrails only" runs the pipeline on a model stub that returns
precomputed probabilities, so it measures the guardrails and nothing else.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guardrails.batch import RequestContext
from guardrails.build import build_pipeline
from guardrails.policy import Policy
from packs.loader import ModelPack, load_table


@dataclass(frozen=True)
class Timing:
    batch: int
    what: str
    us_per_call: float
    us_per_row: float


def _fixed(probs: np.ndarray, features: np.ndarray) -> np.ndarray:
    """A model stub returning precomputed probabilities."""
    return probs


def time_call(fn: Callable[[], object], min_time_s: float, repeats: int = 5) -> float:
    """Median seconds per call over `repeats` runs of at least min_time_s/repeats."""
    fn()  # warm up caches and lazy imports
    calls, budget = 1, min_time_s / repeats
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= budget / 4:
            break
        calls *= 4
    calls = max(1, int(calls * budget / max(elapsed, 1e-9)))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def bench(
    pack_dir: Path,
    policy: Policy,
    *,
    batches: tuple[int, ...] = (1, 1000),
    min_time_s: float = 1.0,
    provider: str = "CPUExecutionProvider",
) -> tuple[str, list[Timing]]:
    """(provider actually used, timings) for the pack's test rows tiled to size."""
    model = ModelPack.load(pack_dir, providers=[provider], intra_op_threads=1)
    meta = model.metadata
    pipeline = build_pipeline(model, policy)
    test = load_table(model.test_path())
    rows = test[meta.feature_names].to_numpy(dtype=meta.input.dtype)
    contexts = [RequestContext()]
    if policy.contexts:
        contexts.append(RequestContext(context=policy.contexts[0]))
    out = []
    for batch in batches:
        x = np.ascontiguousarray(np.resize(rows, (batch, rows.shape[1])))
        probs = model.predict_proba(x)

        stub = functools.partial(_fixed, probs)
        cases: list[tuple[str, Callable[[], object]]] = [
            (
                f"onnxruntime ({model.provider})",
                functools.partial(model.predict_proba, x),
            )
        ]
        for ctx in contexts:
            label = f"context {ctx.context}" if ctx.context else "no context"
            run = functools.partial(pipeline.run, x, stub, ctx)
            cases.append((f"guardrails only, {label}", run))
        full = functools.partial(pipeline.run, x, model.predict_proba, RequestContext())
        cases.append(("model + guardrails, no context", full))
        for what, fn in cases:
            seconds = time_call(fn, min_time_s)
            out.append(Timing(batch, what, seconds * 1e6, seconds * 1e6 / batch))
    return model.provider, out


def to_markdown(provider: str, timings: list[Timing]) -> str:
    lines = [
        f"ONNX provider: {provider}; median of 5 repeats.",
        "",
        "| batch | what | µs per call | µs per row |",
        "|---:|---|---:|---:|",
    ]
    for t in timings:
        lines.append(
            f"| {t.batch} | {t.what} | {t.us_per_call:,.1f} | {t.us_per_row:,.3f} |"
        )
    return "\n".join(lines) + "\n"
