"""The shipped alert rules pass `promtool check rules` and their unit tests, and the
rendered Prometheus config is valid. Fails (not skips) under CI without promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

from monitoring.prometheus_server import RULES, RULES_TEST, render_config, write_config
from tests.monitoring.conftest import require_binary


def promtool(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [require_binary("promtool"), *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_alert_rules_are_valid() -> None:
    out = promtool("check", "rules", str(RULES))
    assert "SUCCESS: 12 rules found" in out


def test_alert_rules_pass_their_unit_tests() -> None:
    out = promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert "SUCCESS" in out


def test_rendered_config_is_valid_and_loads_the_rules(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["127.0.0.1:3000", "127.0.0.1:3001"])
    out = promtool("check", "config", str(config))
    assert "SUCCESS" in out and "12 rules found" in out
    assert '"127.0.0.1:3000", "127.0.0.1:3001"' in config.read_text()


def test_config_needs_a_target() -> None:
    try:
        render_config([])
    except ValueError as exc:
        assert "target" in str(exc)
    else:
        raise AssertionError("an empty target list was accepted")
