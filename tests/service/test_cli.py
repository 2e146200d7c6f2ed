"""The command lines people use: wide help, every advertised command real, misuse as
one line with exit 2, progress for long steps, no Alembic chatter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from common.cli import run, step
from feedback.cli import app as feedback_app
from monitoring.cli import app as monitoring_app
from service.cli import app as service_app
from tests.servers import ROOT

APPS = {"service.cli": service_app, "feedback.cli": feedback_app}
APPS["monitoring.cli"] = monitoring_app


def invoke(
    app: typer.Typer,
    args: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, str, str]:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys, "argv", ["prog", *args])
    with pytest.raises(SystemExit) as exited:
        run(app)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_help_does_not_cut_option_names_in_80_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = invoke(monitoring_app, ["drift", "--help"], capsys, monkeypatch)
    assert code == 0
    for option in ("--min-window-rows", "--report-rate-per-1000", "--fail-on-drift"):
        assert option in out
    assert "…" not in out


def advertised(doc: str | None) -> list[str]:
    """Command names listed in a CLI module's docstring (its help text)."""
    return re.findall(r"^ *([a-z][a-z-]+) {2,}\S", doc or "", re.M)


def test_every_advertised_command_exists(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.cli

    names = advertised(service.cli.__doc__)
    assert {"serve", "feedback", "monitoring", "guardrails", "store-pack"} <= set(names)
    for name in names:
        code, out, err = invoke(service_app, [name, "--help"], capsys, monkeypatch)
        assert code == 0, (name, err)
        assert "Usage:" in out


@pytest.mark.parametrize(
    ("module", "args", "named"),
    [
        ("service.cli", ["nope"], "No such command 'nope'"),
        ("service.cli", ["serve", "--port", "abc"], "'--port'"),
        ("feedback.cli", ["regress"], "Missing option '--db'"),
        ("monitoring.cli", ["drift", "--bogus"], "No such option: --bogus"),
    ],
)
def test_misuse_is_one_line_on_stderr_and_exit_2(
    module: str,
    args: list[str],
    named: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, err = invoke(APPS[module], args, capsys, monkeypatch)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert named in err


def test_a_long_step_says_when_it_starts_and_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with step("replaying the gate"):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "replaying the gate ..."
    assert re.fullmatch(r"replaying the gate: done in \d+\.\d s", lines[1])


def test_migrating_prints_no_alembic_info(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "feedback.cli", "migrate", "--db",
         f"sqlite:///{tmp_path / 'f.db'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "alembic" not in done.stdout + done.stderr
    assert done.stdout.startswith("schema at revision")


def test_serving_a_pack_dir_that_does_not_exist_is_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    env = {"FLYWHEEL_DATA_DIR": str(tmp_path), "FLYWHEEL_PACK_DIR": "/nope"}
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--port", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "cannot start: model pack file is missing: /nope"
    )
    assert "alembic" not in done.stderr
    assert not Path("/nope").exists()
