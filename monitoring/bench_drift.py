"""Benchmark of one drift run end to end, the way the service runs it.

`bench(rows)` first sets up, untimed, a fresh SQLite feedback store in a temporary
data directory exactly as a worker does (`make_engine` + `migrate` on the default
`sqlite:///<data_dir>/flywheel.db`) and logs `rows` predictions into the default
prediction-log directory (`<data_dir>/prediction-log`) through the
service's own writer (`PredictionLog.submit_batch`), as requests of 100 rows whose
`LogBatch`es look like those of `feedback.log_batch.answered_batch`: float32 inputs and
probabilities, a label (none where abstained), and a guardrail trace only on the
rows a guardrail acted on. The values come from `synthetic_rows`, shifted by 0.5
standard deviations on bill and flipper length (2 of the 4 features), so there is
drift to find; the newest row is logged just now, the others 1 ms apart.

It then runs, in a fresh subprocess (so peak RSS is that run's own, Evidently's
import included) with `PROMETHEUS_MULTIPROC_DIR` set as BentoML sets it, the
drift command line the service's schedule spawns (`monitoring.drift_schedule.
drift_command`, i.e. `monitoring.cli drift --metrics`, with `--window-rows rows` so
that the whole log is the window). That one run reads the window from the log
with `feedback.log_window.read_prediction_window` (the drift command's reader),
compares it with the pack's reference table (the served pack's
`reference.parquet`, as the service uses: 204 rows for the default penguin pack),
writes the HTML report and the Evidently workspace snapshot, sets the drift gauges
and feeds the retraining trigger.

Reported: `seconds` (that run end to end, reading the window included, Evidently's
one-off import not), `read_seconds` (reading the window; part of `seconds`),
`import_seconds` (Evidently's import), `process_seconds` (the whole child process
as the parent saw it: interpreter start-up and every import included),
`setup_seconds` (filling the store; not part of the run), `peak_mib` (the child's
peak RSS), `rows` (logged), `rows_read`, `reference_rows`, `drift_share`,
`dataset_drift`, `html_kib`, `snapshot_id` and `gauge_drift_share` (read back from
the multiprocess gauge files).

    .venv/bin/python -m monitoring.bench_drift --rows 100000 --rows 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from feedback.log_batch import LogBatch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACK = ROOT / "data" / "packs" / "penguins"
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
# Per-species means and standard deviations, roughly those of palmerpenguins.
SPECIES = {
    "Adelie": ((38.8, 18.3, 190.0, 3700.0), (2.7, 1.2, 6.5, 460.0)),
    "Chinstrap": ((48.8, 18.4, 196.0, 3730.0), (3.3, 1.1, 7.1, 380.0)),
    "Gentoo": ((47.5, 15.0, 217.0, 5080.0), (3.1, 1.0, 6.5, 500.0)),
}
#: Window shift, in standard deviations of bill and flipper length.
SHIFT = 0.5
#: Share of logged rows that abstained (no label), about what the default policy gives.
ABSTAINED_SHARE = 0.003
#: Rows per logged request.
REQUEST_ROWS = 100
#: The default policy's trace of a row it abstained on (the log keeps no trace of
#: the rows no guardrail acted on).
ABSTAINED_TRACE = [
    {"stage": "input_bounds", "acted": False},
    {"stage": "temperature", "acted": False, "temperature": 1.0,
     "note": "pack has no fitted temperature (validation set has 0 errors, "
             "fewer than 5)"},
    {"stage": "priors", "acted": False, "source": "training"},
    {"stage": "blacklist", "acted": False},
    {"stage": "output_bounds", "acted": True, "reason": "low_confidence",
     "top_probability": 0.47, "min_top_probability": 0.5},
    {"stage": "decision", "acted": False, "rule": "argmax"},
]  # fmt: skip


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


# --- set-up (parent, not timed) ---------------------------------------------------


def _requests(
    window: pd.DataFrame, *, model_version: str, rng: np.random.Generator
) -> Iterator[LogBatch]:
    """`window` as the log batches of requests of `REQUEST_ROWS` rows each, one
    millisecond apart per row, the last one just now: what `feedback.log_batch.
    answered_batch` hands the prediction log (float32 inputs and probabilities, a
    trace only for the rows a guardrail acted on)."""
    from feedback.log_batch import LogBatch
    from feedback.models import new_prediction_ids

    names = tuple(SPECIES)
    n = len(window)
    inputs = window[FEATURES].to_numpy(np.float32)
    species = pd.Categorical(window["predicted_label"], categories=names).codes
    abstained = rng.random(n) < ABSTAINED_SHARE
    # Most of the mass on the predicted species (under 0.5 where abstained),
    # the rest spread over the others.
    top = np.where(abstained, rng.uniform(0.4, 0.5, n), rng.uniform(0.55, 0.99, n))
    rest = rng.dirichlet((1.0, 1.0), n) * (1 - top)[:, None]
    at = np.arange(n)
    probabilities = np.empty((n, len(names)), dtype=np.float32)
    probabilities[at, species] = top
    for k in (1, 2):
        probabilities[at, (species + k) % len(names)] = rest[:, k - 1]
    flags = abstained.tolist()
    labels = [
        None if a else label
        for label, a in zip(window["predicted_label"].tolist(), flags, strict=True)
    ]
    reasons = ["low_confidence" if a else None for a in flags]
    now = datetime.now(UTC)
    for start in range(0, n, REQUEST_ROWS):
        stop = min(n, start + REQUEST_ROWS)
        acted = abstained[start:stop]
        yield LogBatch(
            ids=new_prediction_ids(stop - start),
            created_at=now - timedelta(milliseconds=n - start),
            model_version=model_version,
            policy_version="bench-policy",
            context=None,
            labels=labels[start:stop],
            abstained=acted,
            reasons=reasons[start:stop],
            probabilities=probabilities[start:stop],
            inputs=inputs[start:stop],
            traces=[ABSTAINED_TRACE if a else None for a in acted.tolist()]
            if acted.any()
            else None,
            feature_names=tuple(FEATURES),
            label_names=names,
        )


def fill_store(
    database_url: str,
    log_dir: Path,
    rows: int,
    *,
    model_version: str,
    seed: int = 1,
) -> None:
    """Migrate a fresh store and log `rows` shifted predictions into `log_dir`
    through the service's own writer (`PredictionLog.submit_batch`), as requests
    of `REQUEST_ROWS` rows; closes the writer (segments compacted)."""
    from feedback.db import make_engine, migrate
    from feedback.prediction_log import PredictionLog

    engine = make_engine(database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    window = synthetic_rows(rows, seed=seed, shift=SHIFT)
    rng = np.random.default_rng(seed + 1)
    writer = PredictionLog(log_dir).start()
    try:
        for batch in _requests(window, model_version=model_version, rng=rng):
            writer.submit_batch(batch)
    finally:
        closed = writer.close(timeout_s=120)
    if not closed or writer.written_total != rows:
        raise RuntimeError(f"set-up logged {writer.written_total} of {rows} rows")


def _default_pack(work: Path) -> Path:
    from packs.build_default import build_default_pack
    from packs.format import METADATA_FILE

    if (DEFAULT_PACK / METADATA_FILE).is_file():
        return DEFAULT_PACK
    out = work / "pack"
    build_default_pack(out)
    return out


def bench(
    rows: int,
    *,
    pack: Path | None = None,
    timeout_s: float = 600,
    keep_dir: Path | None = None,
) -> dict[str, Any]:
    """One drift run of the service over a store holding `rows` logged predictions.

    Seconds end to end (Evidently's one-off import reported apart, as
    `import_seconds`), seconds reading the window, and peak RSS in MiB, measured in
    a subprocess. `pack` defaults to `data/packs/penguins` (built into the
    temporary directory if missing); `keep_dir` (a fresh directory) keeps the
    store, the reports and the workspace there.
    """
    from sqlalchemy.engine import make_url

    from monitoring.drift_schedule import DriftTarget, drift_command
    from monitoring.settings import MonitoringSettings
    from packs.loader import read_metadata

    with contextlib.ExitStack() as stack:
        if keep_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        else:
            work = Path(keep_dir)
            work.mkdir(parents=True, exist_ok=True)
        pack_dir = pack or _default_pack(work)
        data = work / "data"
        # The service's own defaults: the store, reports and workspace under data/.
        target = DriftTarget(
            database_url=f"sqlite:///{data / 'flywheel.db'}",
            out_dir=data / "drift",
            workspace=data / "evidently",
            log_dir=data / "prediction-log",
        )
        if Path(make_url(target.database_url).database or "").exists():
            raise FileExistsError(f"{data} already holds a store: give a fresh one")
        meta = read_metadata(pack_dir)
        started = time.perf_counter()
        fill_store(
            target.database_url, target.log_dir, rows, model_version=meta.version
        )
        setup_s = time.perf_counter() - started

        mon = MonitoringSettings(drift_window_rows=max(rows, 10))
        command = drift_command(mon, target, pack_dir)
        assert command[1:4] == ["-m", "monitoring.cli", "drift"], command
        metrics_dir = work / "prometheus-multiproc"
        metrics_dir.mkdir(exist_ok=True)
        env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "monitoring.bench_drift", "--json",
             "--rows", str(rows), "--", *command[3:]],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
        process_s = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(
                f"drift bench exited with {done.returncode}: {done.stderr[-2000:]}"
            )
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(process_s, 3)
    result["setup_seconds"] = round(setup_s, 3)
    return result


# --- the timed run (child process) --------------------------------------------------


def _gauge(metrics_dir: str, name: str) -> float | None:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def _run_in_this_process(rows: int, drift_args: list[str]) -> dict[str, Any]:
    """Import Evidently, then run the drift command with `drift_args` here."""
    import typer

    import feedback.log_window
    from monitoring.cli import app
    from monitoring.evidently_import import import_evidently

    started = time.perf_counter()
    import_evidently()  # timed apart: paid once per process
    imported = time.perf_counter()

    reads: list[tuple[float, int]] = []
    reader = feedback.log_window.read_prediction_window

    @functools.wraps(reader)
    def timed_reader(*args: Any, **kwargs: Any) -> pd.DataFrame:
        t0 = time.perf_counter()
        frame = reader(*args, **kwargs)
        reads.append((time.perf_counter() - t0, len(frame)))
        return frame

    # The drift command imports the reader when it reads the window.
    feedback.log_window.read_prediction_window = timed_reader  # type: ignore[assignment]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        typer.main.get_command(app).main(
            drift_args, prog_name="monitoring.cli", standalone_mode=False
        )
    done = time.perf_counter()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = json.loads(printed.getvalue())
    if len(reads) != 1:
        raise RuntimeError(f"expected one window read, saw {len(reads)}")
    read_s, rows_read = reads[0]
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    html = Path(result["html_path"]) if result.get("html_path") else None
    return {
        "rows": rows,
        "rows_read": rows_read,
        "reference_rows": result["reference_rows"],
        "seconds": round(done - imported, 3),
        "read_seconds": round(read_s, 3),
        "import_seconds": round(imported - started, 3),
        "peak_mib": round(peak_kib / 1024, 1),
        "drift_share": result["drift_share"] or 0.0,
        "dataset_drift": result["dataset_drift"],
        "html_kib": round(html.stat().st_size / 1024) if html else None,
        "snapshot_id": result["snapshot_id"],
        "gauge_drift_share": (
            _gauge(metrics_dir, "flywheel_drift_share") if metrics_dir else None
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append")
    parser.add_argument("--pack", type=Path, help="model pack (default: penguins)")
    parser.add_argument("--keep", type=Path, help="keep the store and outputs here")
    parser.add_argument(
        "--json", action="store_true", help="internal: the timed child run"
    )
    parser.add_argument("drift_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json:
        (rows,) = args.rows or [10_000]
        print(json.dumps(_run_in_this_process(rows, args.drift_args)))
        return
    for rows in args.rows or [10_000, 100_000]:
        keep = args.keep / str(rows) if args.keep else None
        print(json.dumps(bench(rows, pack=args.pack, keep_dir=keep)), flush=True)


if __name__ == "__main__":
    main()
