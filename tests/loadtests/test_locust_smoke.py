"""CI smoke run of the locust scenarios against the real service (issue 6).

Eight users for five seconds, every scenario present (single, batch and column
predictions, island contexts, reports with idempotent retries, health probes):
any failed request, any exception in a scenario, or no requests at all fails it.
"""

from __future__ import annotations

import csv
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
    argv += ["--only-summary", "--exit-code-on-error", "1", "--csv", str(out)]
    return subprocess.run(
        [*argv, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_every_scenario_runs_without_a_failed_request(
    tmp_path: Path, default_pack: Path
) -> None:
    out = tmp_path / "locust"
    # All users report from 127.0.0.1: lift the per-client report limit.
    overrides = {"FLYWHEEL_FEEDBACK__REPORT_RATE_PER_MINUTE": "1000000"}
    with running(tmp_path / "service", default_pack, **overrides) as svc:
        done = run_locust(svc.url, out)
    log = done.stdout[-3000:] + done.stderr[-3000:]
    stats = {row["Name"]: row for row in read_csv(Path(f"{out}_stats.csv"))}
    total = stats.pop("Aggregated")
    assert int(total["Request Count"]) > 0, log
    assert int(total["Failure Count"]) == 0, read_csv(Path(f"{out}_failures.csv"))
    assert read_csv(Path(f"{out}_exceptions.csv")) == [], log
    assert set(stats) >= EXPECTED, f"missing scenarios {EXPECTED - set(stats)}"
    assert done.returncode == 0, log


def test_refuses_a_host_that_is_not_loopback(tmp_path: Path) -> None:
    done = run_locust("http://192.0.2.1:3000", tmp_path / "locust")
    assert done.returncode != 0
    assert "loopback only" in done.stdout + done.stderr
