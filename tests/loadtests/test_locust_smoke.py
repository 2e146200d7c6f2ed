"""CI smoke run of the locust scenarios against the real service.

Eight users for five seconds, every scenario present (single, batch and column
predictions, island contexts, reports with idempotent retries, health probes):
any failed request, any exception in a scenario, or no requests at all fails it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import running

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
EXPECTED = {
    "/predict 1 row",
    "/predict 100 rows",
    "/predict 100 rows, columns",
    "/predict with context",
    "/predict before report",
    "/report",
    "/report retry (same key)",
    "/livez",
    "/readyz",
    "/info",
}


def run_locust(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]
    argv += ["-H", url, "-u", "8", "-r", "8", "-t", "5s", "--stop-timeout", "5"]
    # --json-file is written once at shutdown with the final numbers (the CSV
    # files are rewritten every second and can miss the last one).
    argv += ["--exit-code-on-error", "1", "--json-file", str(out)]
    return subprocess.run(
        [*argv, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_scenario_runs_without_a_failed_request(
    tmp_path: Path, default_pack: Path
) -> None:
    out = tmp_path / "locust"
    # All users report from 127.0.0.1: lift the per-client report limit.
    overrides = {"FLYWHEEL_FEEDBACK__REPORT_RATE_PER_MINUTE": "1000000"}
    with running(tmp_path / "service", default_pack, **overrides) as svc:
        done = run_locust(svc.url, out)
    log = done.stdout[-3000:] + done.stderr[-3000:]
    stats = json.loads(Path(f"{out}.json").read_text())
    by_name = {entry["name"]: entry for entry in stats}
    assert sum(e["num_requests"] for e in stats) > 0, log
    failed = {e["name"]: e["num_failures"] for e in stats if e["num_failures"]}
    assert failed == {}, log
    assert set(by_name) >= EXPECTED, f"missing scenarios {EXPECTED - set(by_name)}"
    # Non-zero also when a scenario raised (locust counts it as an exception).
    assert done.returncode == 0, log


def test_refuses_a_host_that_is_not_loopback(tmp_path: Path) -> None:
    done = run_locust("http://192.0.2.1:3000", tmp_path / "locust")
    assert done.returncode != 0
    assert "loopback only" in done.stdout + done.stderr
