"""The offline evaluation and benchmark commands on the default pack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from guardrails.cli import app
from guardrails.evaluation import VARIANTS, evaluate
from guardrails.policy import Policy

POLICY = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"


def test_evaluation_covers_every_island_and_variant(default_pack: Path) -> None:
    table = evaluate(default_pack, Policy.load(POLICY), resampled_rows=300, repeats=2)
    by = {(r.deployment, r.variant): r for r in table.results}
    for island in ("Biscoe", "Dream", "Torgersen"):
        for variant in VARIANTS:
            assert (island, variant) in by
            assert (f"resampled: {island}", variant) in by
    no_shift = "whole test set, no context (no shift)"
    assert (no_shift, "+ context priors") not in by  # no context to use there
    assert (no_shift, "+ EM priors (guarded)") in by
    for r in table.results:
        assert 0 <= r.accuracy <= 1 and r.log_loss >= 0 and 0 <= r.ece <= 1
    # The guarded estimate never runs on a window below the policy's minimum.
    assert "needs 200" in by[("Torgersen", "+ EM priors (guarded)")].note
    assert by[("Torgersen", "+ EM priors (guarded)")].log_loss == (
        by[("Torgersen", "+ temperature")].log_loss
    )
    # Torgersen has only Adelie penguins: its known priors cannot hurt there.
    known = by[("resampled: Torgersen", "+ context priors")]
    assert known.log_loss <= by[("resampled: Torgersen", "raw model")].log_loss
    markdown = table.to_markdown()
    assert markdown.count("\n| ") == len(table.results) + 1


def test_cli_evaluate_prints_and_writes_the_table(
    default_pack: Path, tmp_path: Path
) -> None:
    out = tmp_path / "table.md"
    args = ["evaluate", "--pack", str(default_pack), "--policy", str(POLICY)]
    result = CliRunner().invoke(
        app, [*args, "--rows", "200", "--repeats", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "| Torgersen | " in result.output
    assert out.read_text() in result.output


def test_cli_bench_reports_both_batch_sizes(default_pack: Path) -> None:
    args = ["bench", "--pack", str(default_pack), "--policy", str(POLICY)]
    result = CliRunner().invoke(app, [*args, "--min-time-s", "0.02"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("| 1")]
    assert {line.split("|")[1].strip() for line in lines} == {"1", "1000"}
    assert any("guardrails only" in line for line in lines)
    assert any("onnxruntime" in line for line in lines)


def test_cli_refuses_a_bad_policy_file(default_pack: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: x\npriors:\n  flor: 1\n")
    args = ["evaluate", "--pack", str(default_pack), "--policy", str(bad)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "priors.flor" in result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) == 1


def test_cli_names_a_missing_pack_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "guardrails.cli", "evaluate", "--pack", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"evaluate: model pack file is missing: {tmp_path / 'metadata.json'}"
    )
