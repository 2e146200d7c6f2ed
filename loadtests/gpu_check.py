"""One prepared check for a GPU machine: is CUDA really used, does it agree with
the CPU, and how fast is it, through the service's own model loader and guardrails.

    .venv/bin/python -m loadtests.gpu_check [--pack data/packs/penguins] [--seconds 2]

Prints one JSON object:
- the providers onnxruntime lists, and the provider the pack's session really runs
  on when loaded as the service loads it (`ModelPack.load` with the default
  providers, read back from the session: asking for CUDA silently falls back to
  the CPU when the CUDA libraries are missing);
- the largest CPU/CUDA probability difference over 10,000 rows drawn from the
  pack's test set with noise (parity holds at 1e-5), and whether the guarded
  answers (labels, abstentions) agree;
- single-row and 1,000-row batch throughput on each provider, for the bare model
  (`predict_proba`) and for model + guardrails under the pack's own policy;
- the same difference with TF32 allowed (`serving.allow_tf32`), which the
  service leaves off.

Exit status 0 when CUDA is in use and parity holds, 1 when it does not, 2 when
CUDA is not available (the message says so; the CPU figures still print). The
default pack is built into a temporary directory when `--pack` is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PARITY = 1e-5
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ROWS = 10_000
BATCH = 1_000


def _rows_per_s(
    call: Callable[[np.ndarray], object], x: np.ndarray, seconds: float
) -> float:
    call(x)  # the first call on CUDA allocates and compiles
    rows, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call(x)
        rows += len(x)
    return rows / (time.perf_counter() - started)


def _test_rows(pack: Any, n: int) -> np.ndarray:
    """n rows like the pack's test set: its rows resized, each feature jittered by
    a tenth of its spread, so that parity is checked off the exact test points."""
    from packs.loader import load_table

    meta = pack.metadata
    test = load_table(pack.test_path())[meta.feature_names].to_numpy(np.float64)
    rng = np.random.default_rng(0)
    rows = np.resize(test, (n, test.shape[1]))
    spread = np.nanstd(test, axis=0) + 1e-12
    return (rows + rng.normal(0.0, 0.1, rows.shape) * spread).astype(np.float32)


def _throughput(
    pack: Any, pipeline: Any, x: np.ndarray, seconds: float
) -> dict[str, float]:
    from guardrails.pipeline import RequestContext

    def guarded(rows: np.ndarray) -> object:
        return pipeline.run(rows, pack.predict_proba, RequestContext())

    return {
        "model_single_row_rows_per_s": _rows_per_s(pack.predict_proba, x[:1], seconds),
        "model_batch_1000_rows_per_s": _rows_per_s(
            pack.predict_proba, x[:BATCH], seconds
        ),
        "guarded_single_row_rows_per_s": _rows_per_s(guarded, x[:1], seconds),
        "guarded_batch_1000_rows_per_s": _rows_per_s(guarded, x[:BATCH], seconds),
    }


def check(pack_dir: Path, seconds: float) -> tuple[dict[str, Any], int]:
    import onnxruntime as ort

    from guardrails.pipeline import GuardrailPipeline, RequestContext
    from guardrails.policy import Policy
    from packs.loader import ModelPack

    cpu = ModelPack.load(pack_dir, providers=[CPU])
    pipeline = GuardrailPipeline(Policy.load(cpu.policy_path()), cpu.metadata)
    x = _test_rows(cpu, ROWS)
    result: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "pack": f"{cpu.metadata.name} {cpu.metadata.version}",
        "cpu": _throughput(cpu, pipeline, x, seconds),
    }
    served = ModelPack.load(pack_dir)  # the service's default providers
    result["served_pack_runs_on"] = served.provider
    if served.provider != CUDA:
        result["cuda"] = (
            f"CUDA not available: asked for {CUDA}, the session runs on "
            f"{served.provider} (no GPU, or the CUDA 13 / cuDNN 9 libraries are "
            "not on the loader's path)"
        )
        return result, 2
    difference = float(np.abs(cpu.predict_proba(x) - served.predict_proba(x)).max())
    on_cpu = pipeline.run(x, cpu.predict_proba, RequestContext())
    on_gpu = pipeline.run(x, served.predict_proba, RequestContext())
    same = [a == b for a, b in zip(on_cpu.labels, on_gpu.labels, strict=True)]
    tf32 = ModelPack.load(pack_dir, allow_tf32=True)
    result["cuda"] = {
        "max_abs_difference_vs_cpu": difference,
        "max_abs_difference_vs_cpu_with_tf32": float(
            np.abs(cpu.predict_proba(x) - tf32.predict_proba(x)).max()
        ),
        "parity_1e-5": difference <= PARITY,
        "guarded_labels_equal": f"{sum(same)} / {len(same)}",
        **_throughput(served, pipeline, x, seconds),
    }
    return result, 0 if difference <= PARITY else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, default=ROOT / "data/packs/penguins")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    with tempfile.TemporaryDirectory() as tmp:
        pack = args.pack
        if not (pack / "metadata.json").is_file():
            from packs.build_default import build_default_pack

            pack = Path(tmp) / "penguins"
            build_default_pack(pack)
        result, code = check(pack, args.seconds)
    print(json.dumps(result, indent=2))
    if code == 2:
        print(result["cuda"], file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
