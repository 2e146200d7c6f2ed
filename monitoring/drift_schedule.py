"""Run the drift job in a child process of one worker.

Evidently costs seconds of CPU and ~300 MiB to import and holds the GIL while it
computes, so the runs happen in a child: `python -m monitoring.cli drift
--metrics` per run, or, with `drift_worker`, `... --serve` started once, which
imports Evidently once and then makes one run per request (niced, so serving
comes first). The serving workers never import it, and
because the child inherits BentoML's `PROMETHEUS_MULTIPROC_DIR` its drift gauges
appear on the service's `/metrics`. Only the first worker schedules runs (one
snapshot per window, not one per worker); across replicas sharing a store,
`service.wiring` calls `run_once` through a lease (`feedback.windowed_job`) so
that one replica runs each window.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    state_key: str | None = None
    """Name of the drift cursor and retraining streak in the store (shared by the
    deployment's replicas); None: files in `out_dir`."""


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
    if target.state_key is not None:
        cmd += ["--state-key", target.state_key]
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
    """Drift runs in child processes: with `drift_worker`, one long-lived, niced
    child (`drift --serve`); without, one child per run (the default until the
    worker has been measured in CI).

    The worker imports Evidently once and then runs whenever asked: `run_once`
    writes a line to its stdin and waits (at most `drift_timeout_s`) for its
    one-line JSON result. A child that died, hangs past the timeout, or serves
    another pack than the one served now is replaced.
    """

    def __init__(
        self,
        mon: MonitoringSettings,
        target: DriftTarget,
        pack_dir: Callable[[], Path],
    ):
        self.mon = mon
        self.target = target
        self._pack_dir = pack_dir
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._child_pack: Path | None = None
        self.last_result: dict[str, Any] | None = None

    def run_once(self) -> int | None:
        """One drift run; 0 when it completed or skipped, 1 when it failed,
        None when it had to be killed (timed out or gone)."""
        if not self.mon.drift_worker:
            return self._run_child()
        with self._lock:
            child = self._worker()
            if child is None:
                return None
            assert child.stdin is not None and child.stdout is not None
            try:
                child.stdin.write(b"run\n")
                child.stdin.flush()
            except (BrokenPipeError, OSError):
                self._kill("drift worker is gone")
                return None
            line = _read_line(child, self.mon.drift_timeout_s)
            if line is None:
                self._kill(f"drift run gave no answer in {self.mon.drift_timeout_s}s")
                return None
            self.last_result = json.loads(line)
            if "error" in self.last_result:
                log.warning("drift run failed: %s", self.last_result["error"])
                return 1
            return 0

    def _run_child(self) -> int | None:
        """One run in a child process of its own (Evidently imported each time)."""
        self.target.out_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.target.out_dir / "drift-job.log"
        with self._lock, log_path.open("ab") as out:
            self._child = child = subprocess.Popen(
                drift_command(self.mon, self.target, self._pack_dir()),
                cwd=PROJECT_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                code = child.wait(timeout=self.mon.drift_timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                log.error("drift run killed after %ss", self.mon.drift_timeout_s)
                return None
            finally:
                self._child = None
        if code != 0:
            log.warning("drift run exited with %s; see %s", code, log_path)
        return code

    def _worker(self) -> subprocess.Popen[bytes] | None:
        pack = self._pack_dir()
        child = self._child
        if child is not None and child.poll() is None and self._child_pack == pack:
            return child
        if child is not None:
            self._kill("serving another pack" if child.poll() is None else None)
        self.target.out_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.target.out_dir / "drift-job.log"
        with log_path.open("ab") as err:
            child = subprocess.Popen(
                [*drift_command(self.mon, self.target, pack), "--serve"],
                cwd=PROJECT_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self._child, self._child_pack = child, pack
        # The first line says the worker is up (Evidently imported).
        if _read_line(child, self.mon.drift_timeout_s) is None:
            self._kill(f"drift worker did not start; see {log_path}")
            return None
        return child

    def _kill(self, why: str | None) -> None:
        child = self._child
        self._child = None
        if child is None:
            return
        if why:
            log.error("stopping the drift worker: %s", why)
        if child.poll() is None:
            child.kill()
        child.wait()

    def cancel_run(self) -> None:
        """Kill the drift worker (its run's lease was lost); the next run starts
        a fresh one."""
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()
            # Reaped before returning: until then `poll()` still says running, and
            # the next run would hand its window to the dead worker.
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)

    def stop(self) -> None:
        child, self._child = self._child, None
        if child is None or child.poll() is not None:
            return
        if child.stdin is not None:
            child.stdin.close()  # end of input: the worker exits after its run
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _read_line(child: subprocess.Popen[bytes], timeout_s: float) -> str | None:
    """The child's next stdout line, or None if none came in `timeout_s`."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout_s)
    if not ready:
        return None
    line = child.stdout.readline()
    return line.decode() if line else None
