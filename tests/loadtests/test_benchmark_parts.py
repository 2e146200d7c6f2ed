"""The benchmark's own parts: results-file rewriting, hey parsing, profile
attribution, the logging-cost figures, and the bare ASGI app it compares the
service with."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from loadtests.loadgen import LoadResult, _Run, parse_hey
from loadtests.log_cost import cell_summary
from loadtests.profile_service import layer_of
from loadtests.report import BEGIN, END, write

HEY_OUTPUT = """
Summary:
  Total:\t2.0034 secs
  Requests/sec:\t1500.1

Latency distribution:
  10% in 0.0004 secs
  50% in 0.0006 secs
  95% in 0.0011 secs
  99% in 0.0023 secs

Status code distribution:
  [200]\t2990 responses
  [503]\t4 responses

Error distribution:
  [2]\tPost "http://127.0.0.1:1/predict": EOF
"""


def test_rewriting_results_keeps_the_hand_written_analysis(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(f"# Title\n\n{BEGIN}\nold numbers\n{END}\n\n## Analysis\nkept\n")
    write(path, "new numbers\n")
    text = path.read_text()
    assert "new numbers" in text
    assert "old numbers" not in text
    assert text.startswith("# Title") and text.endswith("## Analysis\nkept\n")


def test_a_new_results_file_gets_the_markers(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "RESULTS.md"
    write(path, "numbers\n")
    text = path.read_text()
    assert text.index(BEGIN) < text.index("numbers") < text.index(END)


def test_hey_output_gives_percentiles_and_counts_every_failure() -> None:
    result = parse_hey(_Run(HEY_OUTPUT, 0.5, 1.0, 0.1))
    assert result.requests == 2996
    assert result.errors == 6  # 4 non-2xx answers + 2 transport errors
    assert result.p50_ms == pytest.approx(0.6)
    assert result.p99_ms == pytest.approx(2.3)
    assert result.seconds == pytest.approx(2.0034)


def frame(func: str, path: str) -> str:
    return f"{func} ({path}:1)"


def test_a_sample_goes_to_its_innermost_known_layer() -> None:
    stack = [
        frame("run", "/venv/lib/python3.11/asyncio/base_events.py"),
        frame("__call__", "/venv/site-packages/opentelemetry/asgi/__init__.py"),
        frame("predict", "/work/service/app.py"),
        frame("run", "/work/guardrails/pipeline.py"),
        frame("reduce", "/venv/site-packages/numpy/_core/_methods.py"),
    ]
    assert layer_of(stack) == "guardrails pipeline"
    assert layer_of(stack[:2]) == "BentoML OpenTelemetry middleware"


def test_whole_threads_and_anonymous_frames_go_to_their_owner() -> None:
    writer = [
        frame("_bootstrap", "/usr/lib/python3.11/threading.py"),
        frame("_run", "/work/feedback/prediction_log.py"),
        frame("execute", "/venv/site-packages/sqlalchemy/engine/base.py"),
    ]
    assert layer_of(writer) == "prediction log: writer thread"
    answer = [
        frame("predict", "/work/service/dataplane.py"),
        frame("rows_answer", "/work/service/encoding.py"),
        frame("<listcomp>", "/work/service/encoding.py"),
    ]
    assert layer_of(answer) == "row-form answer encoding"


def test_the_bare_asgi_app_answers_predictions_and_refuses_bad_bodies(
    default_pack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loadtests.raw_app import RawPredictApp

    monkeypatch.setenv("FLYWHEEL_PACK_DIR", str(default_pack))
    app = RawPredictApp()
    app.load()
    row = {
        "bill_length_mm": 39.1,
        "bill_depth_mm": 18.7,
        "flipper_length_mm": 181.0,
        "body_mass_g": 3750.0,
    }

    async def call(body: bytes) -> tuple[int, dict[str, Any]]:
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "path": "/predict", "method": "POST"}
        await app(scope, receive, send)
        return sent[0]["status"], json.loads(sent[1]["body"])

    status, answer = asyncio.run(call(json.dumps({"instances": [row]}).encode()))
    assert status == 200
    (prediction,) = answer["predictions"]
    assert prediction["label"] == "Adelie"
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0)
    status, answer = asyncio.run(call(b'{"rows": []}'))
    assert status == 400


def _load(rps: float) -> LoadResult:
    return LoadResult(
        requests=int(rps * 3),
        seconds=3.0,
        errors=0,
        p50_ms=1.0,
        p95_ms=2.0,
        p99_ms=3.0,
        generator_cpu_s=0.1,
        server_cores=1.0,
        background_cores=0.0,
    )


def test_the_cost_of_logging_is_the_median_ratio_within_pairs() -> None:
    """Machine load moves both runs of a pair: a pair run at half speed counts
    as much as any other, and a pair where logging looked free does not hide
    the others."""
    pairs = [
        (_load(90), _load(100)),
        (_load(45), _load(50)),  # both slowed down by other work
        (_load(100), _load(100)),
        (_load(80), _load(100)),
        (_load(180), _load(200)),
    ]
    cell = cell_summary("batch1000", 16, pairs)
    assert cell["ratio_on_over_off"] == pytest.approx(0.9)
    assert cell["cost"] == pytest.approx(0.1)
    assert (cell["ratio_min"], cell["ratio_max"]) == (pytest.approx(0.8), 1.0)
    assert cell["rps_on"] == pytest.approx(90) and cell["rps_off"] == 100
    # The same CPU per run: more CPU per request where fewer were answered.
    assert cell["cpu_ratio_on_over_off"] == pytest.approx(1 / 0.9)


def test_the_scale_run_counts_answered_and_dropped_rows_from_metrics() -> None:
    from loadtests.scale import ANSWERED, DROPPED, metric_sum

    page = "\n".join(
        [
            "# HELP flywheel_predictions_total Rows answered with a label, by label.",
            "# TYPE flywheel_predictions_total counter",
            'flywheel_predictions_total{label="Adelie"} 1200.0',
            'flywheel_predictions_total{label="Gentoo"} 800.0',
            'flywheel_predictions_created{label="Adelie"} 1.7e9',
            'flywheel_abstentions_total{reason="low_confidence"} 25.0',
            "flywheel_prediction_log_dropped_rows_total 0.0",
            'flywheel_predictions_total_other{label="x"} 5.0',
        ]
    )
    assert metric_sum(page, ANSWERED) == 2025.0
    assert metric_sum(page, (DROPPED,)) == 0.0
