"""Benchmark of one drift run: Evidently comparison + HTML report + workspace snapshot.

`bench(rows)` runs the drift job in a fresh subprocess (so peak memory is that
run's own, Evidently's import included) on a synthetic penguin-like window of
`rows` logged rows, and returns seconds and peak RSS. Reading the window from the
store is not included: the feedback store's reader is measured separately.

    .venv/bin/python -m monitoring.bench_drift --rows 100000
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
# Per-species means and standard deviations, roughly those of palmerpenguins.
SPECIES = {
    "Adelie": ((38.8, 18.3, 190.0, 3700.0), (2.7, 1.2, 6.5, 460.0)),
    "Chinstrap": ((48.8, 18.4, 196.0, 3730.0), (3.3, 1.1, 7.1, 380.0)),
    "Gentoo": ((47.5, 15.0, 217.0, 5080.0), (3.1, 1.0, 6.5, 500.0)),
}


def synthetic_rows(rows: int, *, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Penguin-like rows with `label` = `predicted_label`; `shift` adds that many
    standard deviations to bill length and flipper length (a drifted world)."""
    rng = np.random.default_rng(seed)
    names = list(SPECIES)
    species = rng.choice(len(names), size=rows, p=[0.44, 0.2, 0.36])
    means = np.array([SPECIES[n][0] for n in names])[species]
    stds = np.array([SPECIES[n][1] for n in names])[species]
    values = rng.normal(means, stds)
    values[:, 0] += shift * stds[:, 0]
    values[:, 2] += shift * stds[:, 2]
    frame = pd.DataFrame(values, columns=FEATURES)
    labels = np.array(names, dtype=object)[species]
    frame["label"] = labels
    frame["predicted_label"] = labels
    return frame


def _run_in_this_process(rows: int, reference_rows: int) -> dict[str, float]:
    from monitoring.drift_job import DriftJob
    from monitoring.evidently_import import import_evidently

    window = synthetic_rows(rows, seed=1, shift=0.5)
    reference = synthetic_rows(reference_rows, seed=2)
    started = time.perf_counter()
    import_evidently()  # timed apart: paid once per process

    imported = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        job = DriftJob(
            lambda n: window.tail(n), reference, None,
            window_rows=rows, min_window_rows=1, drift_share=0.5,
            out_dir=Path(tmp) / "html", workspace_dir=Path(tmp) / "ws",
            model_version="bench", feature_names=FEATURES,
            labels=list(SPECIES), project_name="bench",
        )  # fmt: skip
        result = job.run_once()
        done = time.perf_counter()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rows": rows,
        "reference_rows": reference_rows,
        "seconds": round(done - imported, 3),
        "import_seconds": round(imported - started, 3),
        "peak_mib": round(peak_kib / 1024, 1),
        "drift_share": result.drift_share or 0.0,
    }


def bench(rows: int, *, reference_rows: int = 1000, timeout_s: float = 600) -> dict:
    """Seconds (excluding Evidently's one-off import, reported as `import_seconds`)
    and peak RSS in MiB of one drift run over `rows` window rows, in a subprocess."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "monitoring.bench_drift", "--rows", str(rows),
         "--reference-rows", str(reference_rows), "--json"],
        cwd=root, capture_output=True, text=True, timeout=timeout_s, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append")
    parser.add_argument("--reference-rows", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="run here, print JSON")
    args = parser.parse_args(argv)
    if args.json:
        (rows,) = args.rows or [10_000]
        print(json.dumps(_run_in_this_process(rows, args.reference_rows)))
        return
    for rows in args.rows or [10_000, 100_000]:
        print(json.dumps(bench(rows, reference_rows=args.reference_rows)))


if __name__ == "__main__":
    main()
