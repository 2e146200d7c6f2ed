"""Run the drift job on a schedule, in a child process, from one worker.

Evidently costs ~4 s and ~300 MiB to import and holds the GIL while it computes,
so each run is `python -m monitoring.cli drift --metrics` in its own process: the
workers never import it, and because the child inherits BentoML's
`PROMETHEUS_MULTIPROC_DIR` its drift gauges appear on the service's `/metrics`.
Only the first worker schedules runs (one snapshot per window, not one per worker);
across replicas sharing a store, `service.wiring` calls `run_once` through a lease
(`feedback.windowed_job`) so that one replica runs each window.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from monitoring.settings import MonitoringSettings

log = logging.getLogger(__name__)

#: The drift command runs from the project root (`python -m monitoring.cli`).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DriftTarget:
    """Where a drift run reads from and writes to."""

    database_url: str
    out_dir: Path
    """Drift reports and the job's log."""
    workspace: Path
    """The Evidently workspace that receives snapshots."""
    log_dir: Path
    """The prediction log the window is read from."""


def drift_command(
    mon: MonitoringSettings, target: DriftTarget, pack_dir: Path
) -> list[str]:
    """The drift command line for the served pack (also what cron would run)."""
    cmd = [
        sys.executable, "-m", "monitoring.cli", "drift",
        "--db", target.database_url,
        "--log-dir", str(target.log_dir),
        "--pack", str(pack_dir),
        "--out", str(target.out_dir),
        "--workspace", str(target.workspace),
        "--window-rows", str(mon.drift_window_rows),
        "--min-window-rows", str(mon.drift_min_window_rows),
        "--alpha", str(mon.drift_alpha),
        "--consecutive-windows", str(mon.retrain_consecutive_windows),
        "--cooldown-s", str(mon.retrain_cooldown_s),
        "--metrics",
    ]  # fmt: skip
    for name in mon.drift_categorical_features:
        cmd += ["--categorical-feature", name]
    if mon.retrain_report_rate_per_1000 is not None:
        cmd += ["--report-rate-per-1000", str(mon.retrain_report_rate_per_1000)]
    if mon.retrain_hook_command:
        cmd += ["--hook-command", mon.retrain_hook_command]
    if mon.retrain_hook_url:
        cmd += ["--hook-url", mon.retrain_hook_url]
    return cmd


class DriftSchedule:
    def __init__(
        self,
        mon: MonitoringSettings,
        target: DriftTarget,
        pack_dir: Callable[[], Path],
    ):
        self.mon = mon
        self.target = target
        self._pack_dir = pack_dir
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        interval = self.mon.drift_interval_s
        if interval <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="drift", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = self.mon.drift_interval_s
        while not self._stop.wait(interval):
            self.run_once()

    def run_once(self) -> int | None:
        """One drift run; returns its exit code (None if it was killed)."""
        self.target.out_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.target.out_dir / "drift-job.log"
        with log_path.open("ab") as out:
            self._child = subprocess.Popen(
                drift_command(self.mon, self.target, self._pack_dir()),
                cwd=PROJECT_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                code = self._child.wait(timeout=self.mon.drift_timeout_s)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
                log.error("drift run killed after %ss", self.mon.drift_timeout_s)
                return None
        if code != 0:
            log.warning("drift run exited with %s; see %s", code, log_path)
        return code

    def cancel_run(self) -> None:
        """Kill the running drift child, if any (its lease was lost)."""
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()

    def stop(self) -> None:
        self._stop.set()
        if self._child is not None and self._child.poll() is None:
            self._child.terminate()
        if self._thread is not None:
            self._thread.join(timeout=10)
