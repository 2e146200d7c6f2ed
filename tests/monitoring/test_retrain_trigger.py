"""The retraining policy as pure logic (tables of drift windows and report rates),
and its hooks against a real command and a real loopback HTTP server."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from common.json_state import FileJsonState
from monitoring.drift import ColumnDrift, DriftResult
from monitoring.drift_metrics import DriftMetrics, NullDriftMetrics
from monitoring.retraining import RetrainPolicy, RetrainTrigger, jsonl_request_writer

SKIP = None  # a skipped window in the tables below


def window(share: float | None, *, drifted: bool | None = None) -> DriftResult:
    """A drift window whose share of drifted features is `share`; the detector's
    verdict is "drifted" when any feature drifted, unless `drifted` says otherwise
    (an output alone drifting, with every feature clean)."""
    common: dict[str, Any] = {
        "model_version": "v1", "window_rows": 500, "reference_rows": 200,
        "min_window_rows": 100, "alpha": 0.05, "computed_at": datetime.now(UTC),
    }  # fmt: skip
    if share is None:
        return DriftResult(skipped=True, reason="too few rows", **common)
    verdict = share > 0 if drifted is None else drifted
    features = {
        "f": ColumnDrift(1e-6 if share > 0 else 0.4, "ks", 0.01, share > 0, 0.3),
        "g": ColumnDrift(0.7, "ks", 0.01, False, 0.05),
    }
    outputs = {
        "predicted_label": ColumnDrift(
            1e-9 if verdict and share == 0 else 0.5, "chisquare", 0.01,
            verdict and share == 0, 40.0, "output",
        )
    }  # fmt: skip
    return DriftResult(
        skipped=False, reason=None, dataset_drift=verdict, drift_share=share,
        drifted_columns=int(share > 0), features=features, outputs=outputs,
        per_test_alpha=0.01, distinct_rows=500, **common,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def trigger(
    requests: list[tuple[str, dict[str, Any]]], clock: Clock | None = None, **policy
) -> RetrainTrigger:
    return RetrainTrigger(
        RetrainPolicy(**policy),
        open_request=lambda reason, details: requests.append((reason, details)),
        metrics=NullDriftMetrics(),
        clock=clock or Clock(),
    )


@pytest.mark.parametrize(
    ("shares", "opened_after"),
    [
        ([0.75, 0.75, 0.75], [3]),
        ([0.75, 0.75, 0.0, 0.75, 0.75], []),  # a clean window resets the streak
        # skipped windows neither count nor reset
        ([0.75, SKIP, 0.75, SKIP, 0.75], [5]),
        # one drifted feature of many is a drifted window (no share threshold)
        ([0.25, 0.25, 0.25], [3]),
        ([0.0, 0.0, 0.0, 0.0], []),
        ([0.75] * 6, [3, 6]),  # a new streak is needed after a request (no cooldown)
    ],
)
def test_drift_streak_table(shares: list[float | None], opened_after: list[int]):
    requests: list[tuple[str, dict[str, Any]]] = []
    t = trigger(requests, consecutive_windows=3, cooldown_s=0)
    opened = [i + 1 for i, s in enumerate(shares) if t.observe(window(s))]
    assert opened == opened_after
    assert [r for r, _ in requests] == ["drift"] * len(opened_after)


def test_cooldown_holds_back_a_second_request_until_it_expires() -> None:
    requests: list[tuple[str, dict[str, Any]]] = []
    clock = Clock()
    t = trigger(requests, clock, consecutive_windows=1, cooldown_s=600)
    assert t.observe(window(0.75))
    clock.now += 300
    assert t.observe(window(0.75)) is None
    clock.now += 301
    assert t.observe(window(0.75))
    assert len(requests) == 2


@pytest.mark.parametrize(
    ("reports", "predictions", "opens"),
    [
        (11, 1000, True),  # 11 per 1,000 > 10
        (10, 1000, False),  # exactly the threshold is not above it
        (5, 400, False),  # 12.5 per 1,000, but too few predictions to judge
        (0, 0, False),
    ],
)
def test_report_rate_table(reports: int, predictions: int, opens: bool) -> None:
    requests: list[tuple[str, dict[str, Any]]] = []
    t = trigger(requests, report_rate_per_1000=10, min_predictions_for_rate=500)
    decision = t.observe_report_rate(reports=reports, predictions=predictions)
    assert (decision is not None) is opens
    assert [r for r, _ in requests] == (["report_rate"] if opens else [])


def test_an_output_alone_drifting_counts_and_the_request_names_it() -> None:
    requests: list[tuple[str, dict[str, Any]]] = []
    t = trigger(requests, consecutive_windows=2, cooldown_s=0)
    assert t.observe(window(0.0, drifted=True)) is None
    decision = t.observe(window(0.0, drifted=True))
    assert decision is not None
    details = decision.details
    assert details["drifted_features"] == []
    assert details["drifted"] == [
        {"column": "predicted_label", "kind": "output", "test": "chisquare",
         "statistic": 40.0, "p_value": 1e-9, "threshold": 0.01}
    ]  # fmt: skip
    assert "predicted_label (output, chisquare statistic 40" in details["summary"]
    assert "p=1e-09 < 0.01" in details["summary"]
    assert details["alpha"] == 0.05 and details["consecutive_windows"] == 2


def test_report_rate_is_off_unless_the_policy_sets_it() -> None:
    requests: list[tuple[str, dict[str, Any]]] = []
    t = trigger(requests)
    assert t.observe_report_rate(reports=999, predictions=1000) is None


def test_a_failed_store_write_keeps_the_streak_for_the_next_window() -> None:
    calls = []

    def failing(reason: str, details: dict[str, Any]) -> None:
        calls.append(reason)
        if len(calls) == 1:
            raise ConnectionError("database down")

    t = RetrainTrigger(
        RetrainPolicy(consecutive_windows=2, cooldown_s=0),
        open_request=failing,
        metrics=NullDriftMetrics(),
    )
    t.observe(window(0.75))
    with pytest.raises(ConnectionError):
        t.observe(window(0.75))
    assert t.streak == 2
    assert t.observe(window(0.75)) is not None
    assert t.streak == 0


def test_state_file_carries_streak_and_cooldown_across_processes(
    tmp_path: Path,
) -> None:
    state = tmp_path / "trigger.json"
    requests: list[tuple[str, dict[str, Any]]] = []
    clock = Clock()

    def fresh() -> RetrainTrigger:
        return RetrainTrigger(
            RetrainPolicy(consecutive_windows=2, cooldown_s=3600),
            open_request=lambda r, d: requests.append((r, d)),
            state=FileJsonState(state), clock=clock, metrics=NullDriftMetrics(),
        )  # fmt: skip

    fresh().observe(window(0.75))
    assert fresh().streak == 1
    assert fresh().observe(window(0.75)) is not None
    fresh().observe(window(0.75))
    assert fresh().observe(window(0.75)) is None  # cooling down
    assert len(requests) == 1


def test_policy_refuses_impossible_values() -> None:
    with pytest.raises(ValidationError):
        RetrainPolicy(consecutive_windows=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        RetrainPolicy(consecutive_windows=0)
    with pytest.raises(ValidationError):
        RetrainPolicy(unknown=1)  # type: ignore[call-arg]


# ---- hooks -------------------------------------------------------------------


def test_command_hook_receives_the_request_as_json(tmp_path: Path) -> None:
    out = tmp_path / "hook.json"
    script = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    t = RetrainTrigger(
        RetrainPolicy(consecutive_windows=1),
        open_request=jsonl_request_writer(tmp_path / "requests.jsonl"),
        hook_command=[sys.executable, "-c", script],
        metrics=NullDriftMetrics(),
    )
    decision = t.observe(window(0.75))
    assert decision is not None and decision.hook_error is None
    payload = json.loads(out.read_text())
    assert payload["reason"] == "drift"
    assert payload["details"]["drift_share"] == 0.75
    assert payload["details"]["drifted_features"] == ["f"]
    line = json.loads((tmp_path / "requests.jsonl").read_text())
    assert line["reason"] == "drift"


def test_a_failing_or_slow_hook_is_counted_not_raised(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = DriftMetrics(registry, labels=["a", "b"], features=["x"])
    requests: list[str] = []
    for command in ([sys.executable, "-c", "raise SystemExit(4)"],
                    [sys.executable, "-c", "import time; time.sleep(5)"]):  # fmt: skip
        t = RetrainTrigger(
            RetrainPolicy(consecutive_windows=1, hook_timeout_s=0.5),
            open_request=lambda r, d: requests.append(r),
            hook_command=command, metrics=metrics,
        )  # fmt: skip
        decision = t.observe(window(0.75))
        assert decision is not None and decision.hook_error
    assert requests == ["drift", "drift"]
    failures = registry.get_sample_value(
        "flywheel_retraining_hook_failures_total", {"kind": "command"}
    )
    assert failures == 2


class _Recorder(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []
    status: ClassVar[int] = 202

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Recorder", (_Recorder,), {"bodies": [], "status": 202})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/retrain", handler
    server.shutdown()
    server.server_close()


def test_http_hook_posts_the_request(
    hook_server: tuple[str, type[_Recorder]],
) -> None:
    url, handler = hook_server
    t = RetrainTrigger(
        RetrainPolicy(report_rate_per_1000=5, min_predictions_for_rate=100),
        open_request=lambda r, d: None,
        hook_url=url,
        metrics=NullDriftMetrics(),
    )
    decision = t.observe_report_rate(reports=3, predictions=200, model_version="v9")
    assert decision is not None and decision.hook_error is None
    assert handler.bodies == [{"reason": "report_rate", "details": decision.details}]
    assert handler.bodies[0]["details"]["model_version"] == "v9"


def test_http_hook_error_status_is_reported(
    hook_server: tuple[str, type[_Recorder]],
) -> None:
    url, handler = hook_server
    handler.status = 500
    t = RetrainTrigger(
        RetrainPolicy(consecutive_windows=1),
        open_request=lambda r, d: None,
        hook_url=url,
        metrics=NullDriftMetrics(),
    )
    decision = t.observe(window(1.0))
    assert decision is not None and "HTTP 500" in (decision.hook_error or "")
