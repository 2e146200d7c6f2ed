"""Monitoring commands: a drift run for cron, Evidently's UI, and Prometheus.

    python -m monitoring.cli drift --db sqlite:///data/flywheel.db \
        --log-dir data/prediction-log --pack data/packs/penguins \
        --out data/drift --workspace data/evidently
    python -m monitoring.cli ui --workspace data/evidently --port 8000
    python -m monitoring.cli prometheus --target 127.0.0.1:3000 --port 9090 \
        --data data/prometheus
    python -m monitoring.cli up --target 127.0.0.1:3000 --workspace data/evidently \
        --data data/prometheus          # Prometheus + Evidently UI together

Everything listens on 127.0.0.1 only. The drift command imports the feedback store
lazily and exits 0 whether or not drift was found (it prints the result as JSON);
`--fail-on-drift` makes dataset drift exit 3, for CI-style checks.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from common.cli import new_app, run, step

DEFAULT_PACK = Path("data/packs/penguins")
PACK_FOR_HINT = typer.Option(
    help="Pack whose project is prepared before the first drift run (if present)"
)

app = new_app(__doc__)
log = logging.getLogger("monitoring.cli")

DRIFT_EXIT = 3


@app.command()
def drift(
    db: Annotated[
        str, typer.Option(help="Store database URL (sqlite:/// or postgresql://)")
    ],
    log_dir: Annotated[
        Path, typer.Option(help="Prediction-log directory (segments of every worker)")
    ],
    pack: Annotated[Path, typer.Option(help="Model pack directory (reference data)")],
    out: Annotated[Path, typer.Option(help="Directory for HTML drift reports")],
    workspace: Annotated[Path, typer.Option(help="Evidently workspace directory")],
    window_rows: Annotated[int, typer.Option(min=1)] = 5000,
    min_window_rows: Annotated[int, typer.Option(min=1)] = 200,
    alpha: Annotated[
        float,
        typer.Option(
            min=1e-9,
            max=0.999999,
            help="Family-wise false-alarm rate per window (Bonferroni over tests)",
        ),
    ] = 0.05,
    categorical_feature: Annotated[
        list[str] | None,
        typer.Option(help="Feature compared as categories (repeatable)"),
    ] = None,
    test_outputs: Annotated[
        bool, typer.Option(help="Also test the model's outputs on both sides")
    ] = True,
    all_versions: Annotated[
        bool, typer.Option(help="Use logged rows of every model version")
    ] = False,
    consecutive_windows: Annotated[int, typer.Option(min=1)] = 3,
    cooldown_s: Annotated[float, typer.Option(min=0.0)] = 3600.0,
    hook_command: Annotated[
        str | None, typer.Option(help="Command run when retraining is requested")
    ] = None,
    hook_url: Annotated[
        str | None, typer.Option(help="URL POSTed when retraining is requested")
    ] = None,
    report_rate_per_1000: Annotated[
        float | None,
        typer.Option(
            help="Open a request above this many reports per 1,000 "
            "predictions over the last --rate-window-s"
        ),
    ] = None,
    rate_window_s: Annotated[float, typer.Option(min=1.0)] = 3600.0,
    fail_on_drift: Annotated[bool, typer.Option()] = False,
    state_key: Annotated[
        str | None,
        typer.Option(
            help="Keep the drift cursor and the retraining streak in the store "
            "under this name (replicas sharing it continue each other's windows); "
            "default: files in --out"
        ),
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            help="Stay up as a niced drift worker: one run per line read on "
            "stdin, one JSON result line on stdout (Evidently imported once)"
        ),
    ] = False,
    metrics: Annotated[
        bool,
        typer.Option(
            help="Set the drift gauges; run with the service's "
            "PROMETHEUS_MULTIPROC_DIR so its /metrics shows them"
        ),
    ] = False,
) -> None:
    """One drift run over the latest logged predictions (for cron, or spawned by
    the service so that Evidently's CPU and memory stay out of its workers)."""
    from monitoring.detector import DetectorConfig
    from monitoring.drift_job import DriftJob
    from monitoring.retraining import RetrainPolicy, RetrainTrigger
    from packs.format import REFERENCE_FILE
    from packs.loader import ModelPack, load_table, read_metadata

    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    meta = read_metadata(pack)
    reference = load_table(pack / REFERENCE_FILE)
    engine, sessions = _store(db)
    version = None if all_versions else meta.version

    from feedback.log_reader import PredictionLogReader

    log_reader = PredictionLogReader(log_dir)

    def read_window(rows: int) -> Any:
        from feedback.log_window import read_prediction_window

        return read_prediction_window(
            log_reader, limit_rows=rows, model_version=version,
            feature_names=meta.feature_names,
        )  # fmt: skip

    def read_probabilities(rows: int) -> Any:
        from feedback.log_probabilities import read_answered_probabilities

        return read_answered_probabilities(
            log_reader, limit_rows=rows, labels=meta.labels, model_version=version
        )

    from monitoring.accuracy_window import window_accuracy_for_pack

    def read_audit() -> Any:
        from feedback.audit_accuracy import audit_accuracy

        with sessions() as session:
            return audit_accuracy(session, model_version=version)

    estimate_accuracy = window_accuracy_for_pack(
        pack, read_probabilities, read_audit=read_audit,
        window_rows=window_rows, min_window_rows=min_window_rows,
    )  # fmt: skip
    from monitoring.drift_metrics import DriftMetrics, NullDriftMetrics

    recorder: DriftMetrics | NullDriftMetrics = NullDriftMetrics()
    if metrics:
        recorder = DriftMetrics(labels=meta.labels, features=meta.feature_names)
    trigger = RetrainTrigger(
        RetrainPolicy(
            consecutive_windows=consecutive_windows,
            cooldown_s=cooldown_s,
            report_rate_per_1000=report_rate_per_1000,
        ),
        open_request=_request_opener(sessions),
        hook_command=shlex.split(hook_command) if hook_command else None,
        hook_url=hook_url,
        metrics=recorder,
        state=_job_state(sessions, state_key, "retrain-trigger", out),
    )
    loaded = ModelPack.load(pack, providers=["CPUExecutionProvider"])
    job = DriftJob(
        read_window, reference, recorder,
        window_rows=window_rows, min_window_rows=min_window_rows,
        detector=DetectorConfig(alpha=alpha), out_dir=out, workspace_dir=workspace,
        model=(lambda: loaded.predict_proba) if test_outputs else None,
        categorical_features=categorical_feature or (),
        cursor=_job_state(sessions, state_key, "drift-cursor", out),
        model_version=meta.version, trigger=trigger,
        feature_names=meta.feature_names, labels=meta.labels, project_name=meta.name,
        read_report_counts=(
            _report_counter(sessions, log_reader, rate_window_s)
            if report_rate_per_1000
            else None
        ),
        estimate_accuracy=estimate_accuracy,
    )  # fmt: skip
    if serve:
        try:
            _serve_runs(job)
        finally:
            engine.dispose()
        return
    try:
        with step(f"drift run over up to {window_rows} logged rows"):
            result = job.run_once()
    finally:
        engine.dispose()
    out_json = result.to_dict()
    if job.last_accuracy is not None:
        out_json["estimated_accuracy"] = {
            "rows": job.last_accuracy.rows,
            "heldout_accuracy": job.last_accuracy.heldout_accuracy,
            "audit_answered": (
                job.last_accuracy.audit.answered if job.last_accuracy.audit else None
            ),
            **{
                name: None if math.isnan(value) else value
                for name, value in job.last_accuracy.estimates.items()
            },
        }
    typer.echo(json.dumps(out_json, indent=2))
    if fail_on_drift and result.dataset_drift:
        raise typer.Exit(DRIFT_EXIT)


#: The drift worker's niceness: its CPU goes to the serving workers first.
DRIFT_WORKER_NICE = 10


def _serve_runs(job: Any) -> None:
    """The drift worker: niced, Evidently imported once, then one run per line
    on stdin until it closes; each result is one JSON line on stdout."""
    import os

    from monitoring.evidently_import import import_evidently

    os.nice(DRIFT_WORKER_NICE)
    import_evidently()
    print(json.dumps({"ready": True}), flush=True)
    for _line in sys.stdin:
        try:
            out = job.run_once().to_dict()
        except Exception as exc:  # counted by the job; the worker stays up
            log.exception("drift run failed")
            out = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out, default=str), flush=True)


def _job_state(sessions: Any, key: str | None, part: str, out: Path) -> Any:
    """Where a run leaves its state for the next one: with `key` a row in the
    store (shared by replicas: the next window may run on another one), else a
    file in `out` (one process per cron run)."""
    if key is None:
        from common.json_state import FileJsonState

        files = {"retrain-trigger": "retrain_trigger_state.json"}
        return FileJsonState(out / files.get(part, f"{part.replace('-', '_')}.json"))
    from feedback.job_state import SqlJsonState

    return SqlJsonState(sessions, f"{key}:{part}")


def _store(db: str) -> tuple[Any, Any]:
    from feedback.db import make_engine, session_factory

    engine = make_engine(db)
    return engine, session_factory(engine)


def _report_counter(sessions: Any, log_reader: Any, window_s: float) -> Any:
    """(reports, predictions) created in the last `window_s` seconds."""
    from datetime import UTC, datetime, timedelta

    from feedback.schemas import ReportFilter
    from feedback.store import count_predictions_since, count_reports

    def counts() -> tuple[int, int]:
        since = datetime.now(UTC) - timedelta(seconds=window_s)
        with sessions() as session:
            return (
                count_reports(session, filter=ReportFilter(created_after=since)),
                count_predictions_since(log_reader, since),
            )

    return counts


def _request_opener(sessions: Any) -> Any:
    """Open retraining requests as rows in the store."""
    from feedback.store import open_retraining_request

    def open_request(reason: str, details: dict[str, Any]) -> None:
        with sessions() as session:
            open_retraining_request(
                session, reason=reason, details=details,
                model_version=details.get("model_version"),
            )  # fmt: skip

    return open_request


@app.command()
def ui(
    workspace: Annotated[Path, typer.Option(help="Evidently workspace directory")],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    pack: Annotated[Path, PACK_FOR_HINT] = DEFAULT_PACK,
) -> None:
    """Serve Evidently's UI on 127.0.0.1 for the workspace (foreground)."""
    workspace.mkdir(parents=True, exist_ok=True)
    _prepare_project(workspace, pack)
    raise typer.Exit(_run_foreground([evidently_ui_command(workspace, port)]))


def _prepare_project(workspace: Path, pack: Path) -> None:
    """The pack's Evidently project with its panels and, until the first drift
    run, a text panel saying when that run comes (skipped without a pack)."""
    from packs.format import METADATA_FILE

    if not (pack / METADATA_FILE).is_file():
        return
    from monitoring.evidently_workspace import prepare_project
    from monitoring.settings import MonitoringSettings
    from packs.loader import read_metadata

    meta = read_metadata(pack)
    defaults = MonitoringSettings()
    hint = (
        "By default the drift job runs every "
        f"{defaults.drift_interval_s:g} s (FLYWHEEL_MONITORING__DRIFT_INTERVAL_S) "
        f"once at least {defaults.drift_min_window_rows} predictions are logged "
        "(FLYWHEEL_MONITORING__DRIFT_MIN_WINDOW_ROWS); the charts fill from its "
        "first run. Run one now with `python -m monitoring.cli drift`."
    )
    prepare_project(
        workspace, project_name=meta.name, features=meta.feature_names,
        labels=meta.labels, hint=hint,
    )  # fmt: skip


def evidently_ui_command(workspace: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "evidently.cli", "ui",
        "--workspace", str(workspace), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


@app.command()
def prometheus(
    target: Annotated[
        list[str], typer.Option(help="host:port of the service (repeatable)")
    ],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 9090,
    data: Annotated[Path, typer.Option(help="Config and TSDB directory")] = Path(
        "data/prometheus"
    ),
    scrape_interval_s: Annotated[float, typer.Option(min=0.1)] = 5.0,
) -> None:
    """Write prometheus.yml (with the project's alert rules) and run Prometheus."""
    raise typer.Exit(
        _run_foreground([_prometheus_command(target, port, data, scrape_interval_s)])
    )


def _prometheus_command(
    targets: list[str], port: int, data: Path, scrape_interval_s: float
) -> list[str]:
    from monitoring.prometheus_server import server_command, write_config

    config = write_config(data, targets, scrape_interval_s=scrape_interval_s)
    return server_command(config, data, port=port)


@app.command()
def up(
    target: Annotated[list[str], typer.Option(help="host:port of the service")],
    workspace: Annotated[Path, typer.Option(help="Evidently workspace directory")],
    data: Annotated[Path, typer.Option(help="Prometheus directory")] = Path(
        "data/prometheus"
    ),
    prometheus_port: Annotated[int, typer.Option()] = 9090,
    ui_port: Annotated[int, typer.Option()] = 8000,
    pack: Annotated[Path, PACK_FOR_HINT] = DEFAULT_PACK,
) -> None:
    """Prometheus scraping the service plus Evidently's UI, until Ctrl-C."""
    workspace.mkdir(parents=True, exist_ok=True)
    _prepare_project(workspace, pack)
    commands = [
        _prometheus_command(target, prometheus_port, data, 5.0),
        evidently_ui_command(workspace, ui_port),
    ]
    typer.echo(
        f"Prometheus: http://127.0.0.1:{prometheus_port}  "
        f"Evidently UI: http://127.0.0.1:{ui_port}  (Ctrl-C stops both)"
    )
    raise typer.Exit(_run_foreground(commands))


def _run_foreground(commands: list[list[str]]) -> int:
    """Run the commands side by side; when one ends or on Ctrl-C/SIGTERM, stop
    the others. Returns the first non-zero exit status (0 if all were clean)."""
    procs = [subprocess.Popen(cmd) for cmd in commands]
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    for p in procs:
        if p.poll() is None:
            p.terminate()
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=15))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    if stopping:
        return 0
    return next((c for c in codes if c not in (0, -signal.SIGTERM)), 0)


if __name__ == "__main__":
    run(app)
