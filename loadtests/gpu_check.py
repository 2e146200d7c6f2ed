"""One prepared check for a GPU machine: is CUDA really used, does it agree with
the CPU, and how fast is it.

    .venv/bin/python -m loadtests.gpu_check [--pack data/packs/penguins] [--seconds 2]

Prints one JSON object: the providers onnxruntime lists, the provider the CUDA
session really runs on (read back with `session.get_providers()`: asking for CUDA
silently falls back to CPU), the largest CPU/CUDA probability difference over
10,000 rows (parity holds at 1e-5), and single-row and 1,000-row batch throughput
on both. Exit status 0 when CUDA is in use and parity holds, 1 when they do not,
2 when CUDA is not available (the message says so; CPU figures still print).
The default pack is built into a temporary directory when `--pack` is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PARITY = 1e-5
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _session(model: Path, providers: list[str]) -> Any:
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # the CPU fallback's noise
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=providers)


def _rows_per_s(session: Any, x: np.ndarray, seconds: float) -> float:
    name = session.get_inputs()[0].name
    rows, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, {name: x})
        rows += len(x)
    return rows / (time.perf_counter() - started)


def _probabilities(session: Any, x: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    outputs = session.run(None, {name: x})
    # The pack's export has one float tensor of probabilities (zipmap off).
    return np.asarray(next(o for o in outputs if np.asarray(o).ndim == 2))


def check(pack: Path, seconds: float) -> tuple[dict[str, Any], int]:
    import onnxruntime as ort

    from packs.format import MODEL_FILE

    model = pack / MODEL_FILE
    rng = np.random.default_rng(0)
    width = _session(model, [CPU]).get_inputs()[0].shape[1]
    x = rng.normal(
        [44, 17, 200, 4200][:width], [5, 2, 14, 800][:width], (10_000, width)
    )
    x = x.astype(np.float32)
    cpu = _session(model, [CPU])
    result: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "cpu": {
            "single_row_rows_per_s": _rows_per_s(cpu, x[:1], seconds),
            "batch_1000_rows_per_s": _rows_per_s(cpu, x[:1000], seconds),
        },
    }
    if CUDA not in ort.get_available_providers():
        result["cuda"] = f"CUDA not available: onnxruntime lists no {CUDA}"
        return result, 2
    gpu = _session(model, [CUDA, CPU])
    used = gpu.get_providers()[0]
    result["cuda_session_runs_on"] = used
    if used != CUDA:
        result["cuda"] = (
            f"CUDA not available: asked for {CUDA}, the session runs on {used} "
            "(no GPU, or CUDA 13 / cuDNN 9 libraries missing)"
        )
        return result, 2
    difference = float(np.abs(_probabilities(cpu, x) - _probabilities(gpu, x)).max())
    result["cuda"] = {
        "max_abs_difference_vs_cpu": difference,
        "parity_1e-5": difference <= PARITY,
        "single_row_rows_per_s": _rows_per_s(gpu, x[:1], seconds),
        "batch_1000_rows_per_s": _rows_per_s(gpu, x[:1000], seconds),
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
