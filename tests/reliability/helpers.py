"""Shared pieces of the reliability tests: payloads, policies, process control,
metrics and direct reads of the feedback store.

Workers of `bentoml serve` run in process groups of their own (BentoML's process
manager puts them there), so "kill the server" means the arbiter and every
descendant: `kill_tree`, not `os.killpg` alone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psutil
import yaml
from sqlalchemy import select

from feedback.db import make_engine
from feedback.log_reader import PredictionLogReader
from feedback.models import Report
from tests.servers import ROOT, ServiceProcess, free_port, service_env, start_service

T = TypeVar("T")

FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
ADELIE = {
    "bill_length_mm": 39.1,
    "bill_depth_mm": 18.7,
    "flipper_length_mm": 181,
    "body_mass_g": 3750,
}
DEFAULT_POLICY = ROOT / "policies" / "default.yaml"


def direct_report(i: int = 0) -> dict[str, Any]:
    """A report that carries its input and output (needs no logged prediction)."""
    return {
        "inputs": {**ADELIE, "body_mass_g": 3000 + i},
        "bad_output": {"label": "Gentoo", "probabilities": {"Gentoo": 0.9}},
        "expected_label": "Adelie",
        "categories": ["reliability-test"],
        "comment": f"report {i}",
    }


def report_codes_until_limited(
    svc: ServiceProcess, tries: int, headers: Callable[[int], dict[str, str]]
) -> list[int]:
    """Status codes of up to `tries` direct reports, each sent with `headers(i)`,
    stopping at the first 429: what a rate-limit test looks at."""
    codes = []
    with svc.client() as c:
        for i in range(tries):
            r = c.post("/report", json=direct_report(i), headers=headers(i))
            codes.append(r.status_code)
            if r.status_code == 429:
                break
    return codes


class MarkerOnUnpickle:
    """Unpickling this creates `marker`: proof that a loader ran pickled code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def write_policy(path: Path, **changes: Any) -> Path:
    """The default policy with top-level keys replaced, written to `path`."""
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    policy.update(changes)
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def wait_until(
    probe: Callable[[], T | None], *, timeout_s: float, interval_s: float = 0.1
) -> T:
    """Call `probe` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


def metric(text: str, name: str) -> float:
    """Value of an unlabelled sample in Prometheus text format (0 when absent)."""
    match = re.search(rf"^{re.escape(name)}(?:\{{\}})? (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# --- processes --------------------------------------------------------------------


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (empty when it is gone)."""
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[psutil.Process]:
    """Send `sig` to a process and every descendant; wait for SIGKILLed ones.

    Returns the processes signalled. (psutil reaps a child it waits for, so the
    Popen object then reads return code 0: check `alive`, not the code.)
    """
    procs = process_tree(pid)
    for proc in procs:
        with suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)
    if sig == signal.SIGKILL:
        psutil.wait_procs(procs, timeout=10)
    return procs


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@contextmanager
def serving(
    data_dir: Path, pack_dir: Path, **overrides: str
) -> Iterator[ServiceProcess]:
    """`start_service` that, at the end, stops with SIGTERM and leaves no worker."""
    svc = start_service(data_dir, pack_dir, **overrides)
    tree = process_tree(svc.process.pid)
    try:
        yield svc
    finally:
        stop(svc, tree)


def stop(svc: ServiceProcess, tree: list[psutil.Process] | None = None) -> int | None:
    """SIGTERM the server, wait up to 30 s, then SIGKILL whatever is left."""
    tree = tree if tree is not None else process_tree(svc.process.pid)
    if svc.process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(svc.process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            svc.process.wait(timeout=30)
    for proc in tree:
        with suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(tree, timeout=10)
    return svc.process.poll()


def run_to_exit(
    data_dir: Path, pack_dir: Path, *, timeout_s: float = 60, **overrides: str
) -> tuple[int | None, str]:
    """Run `service.cli serve` expecting it to exit; (return code, output).

    The return code is None when it was still running after `timeout_s` (then it
    is killed): a service that should have refused to start did not.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    env = service_env(data_dir, pack_dir, **overrides)
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=timeout_s)
        return process.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        out, _ = process.communicate(timeout=10)
        return None, out.decode(errors="replace")


# --- the store, read directly ------------------------------------------------------


def database_url(svc: ServiceProcess) -> str:
    return svc.env.get("FLYWHEEL_FEEDBACK__DATABASE_URL") or (
        f"sqlite:///{svc.data_dir / 'flywheel.db'}"
    )


def stored_reports(url: str) -> list[tuple[str, str | None]]:
    """(report id, idempotency key) of every stored report."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Report.id, Report.idempotency_key)).all()
        return [(r[0], r[1]) for r in rows]
    finally:
        engine.dispose()


def log_dir(svc: ServiceProcess) -> Path:
    """The service's prediction-log directory (its default under the data dir)."""
    return Path(
        svc.env.get("FLYWHEEL_PREDICTION_LOG__DIR") or svc.data_dir / "prediction-log"
    )


def stored_prediction_ids(svc: ServiceProcess) -> set[str]:
    """Every prediction id in the service's log, read from its files."""
    reader = PredictionLogReader(log_dir(svc))
    table = reader.rows_since(datetime(2000, 1, 1, tzinfo=UTC), columns=["id"])
    ids = table["id"].to_pylist() if table.num_rows else []
    return set(ids)
