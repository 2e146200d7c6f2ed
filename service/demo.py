"""The flywheel end to end on the default pack (`python -m service.cli demo`).

1. start the real service in `data/demo` with drift runs every few seconds;
2. send traffic like the training data: the drift job sees no drift;
3. send drifted traffic (a Gentoo colony, a biased scale): drift is detected on
   consecutive windows and a retraining request opens;
4. a user reports a wrong answer, triage confirms it: a regression case;
5. retrain on the training data plus the corrected report, run the gate, promote:
   the new model is served (no restart) and answers the reported case right.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from monitoring.traffic import drifted, instances, like_training
from service.process import ServiceProcess, running
from service.settings import Settings

# A real Adelie (palmerpenguins row 72) that the default model calls Chinstrap.
MISTAKEN_ADELIE = {
    "bill_length_mm": 45.8,
    "bill_depth_mm": 18.9,
    "flipper_length_mm": 197.0,
    "body_mass_g": 4150.0,
}
DEMO_SETTINGS = {
    "FLYWHEEL_MONITORING__DRIFT_INTERVAL_S": "1",
    "FLYWHEEL_MONITORING__DRIFT_WINDOW_ROWS": "300",
    "FLYWHEEL_MONITORING__DRIFT_MIN_WINDOW_ROWS": "100",
    "FLYWHEEL_MONITORING__RETRAIN_CONSECUTIVE_WINDOWS": "2",
    "FLYWHEEL_SERVING__RELOAD_POLL_S": "0.5",
    # The promotion replays the gate inside its request; a busy machine can take
    # longer than BentoML's default 30 s for it.
    "FLYWHEEL_SERVING__REQUEST_TIMEOUT_S": "300",
}


def metric(text: str, name: str) -> float | None:
    """The value of an unlabelled sample in Prometheus text format."""
    match = re.search(rf"^{re.escape(name)} ([0-9.eE+-]+)$", text, re.M)
    return float(match.group(1)) if match else None


def send(client: httpx.Client, rows: list[dict[str, float]], batch: int = 25) -> None:
    for i in range(0, len(rows), batch):
        r = client.post("/predict", json={"instances": rows[i : i + batch]})
        r.raise_for_status()


COMPLETED_RUNS = 'flywheel_drift_runs_total{outcome="completed"}'


def completed_drift_runs(client: httpx.Client) -> float:
    return metric(client.get("/metrics").text, COMPLETED_RUNS) or 0.0


def wait_for_drift_runs(
    client: httpx.Client,
    runs: int,
    timeout_s: float = 120,
    *,
    since: float | None = None,
) -> str:
    """Wait until `runs` more drift runs than `since` (default: now) have
    completed; returns /metrics text. A run only completes on rows it has not
    judged before, so read `since` before sending the rows it should judge."""
    name = COMPLETED_RUNS
    start = completed_drift_runs(client) if since is None else since
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = client.get("/metrics").text
        if (metric(text, name) or 0.0) >= start + runs:
            return text
        time.sleep(0.5)
    raise TimeoutError(f"{runs} drift run(s) did not complete in {timeout_s:.0f} s")


def run_demo(
    settings: Settings,
    *,
    port: int | None = None,
    ui_port: int = 8000,
    keep_running: bool = False,
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    from feedback.db import make_engine, session_factory
    from feedback.retrain import retrain_default_pack
    from packs.build_default import ensure_default_pack

    data = settings.data_dir / "demo"
    shutil.rmtree(data, ignore_errors=True)
    pack = shutil.copytree(
        ensure_default_pack(settings.active_pack_dir, echo=echo),
        data / "packs" / "served",
    )
    token = secrets.token_hex(16)
    env: dict[str, Any] = {**DEMO_SETTINGS, "FLYWHEEL_SECURITY__ADMIN_TOKEN": token}
    summary: dict[str, Any] = {}
    with running(data / "state", pack, port=port, **env) as svc:
        echo(f"service up at {svc.url} (data in {data / 'state'})")
        with svc.client() as client:
            summary |= _flywheel(svc, client, echo, data)
            engine = make_engine(f"sqlite:///{data / 'state' / 'flywheel.db'}")
            with session_factory(engine)() as session:
                candidate, used = retrain_default_pack(
                    session, data / "packs" / "candidate"
                )
            engine.dispose()
            echo(
                f"5. retrained candidate {candidate.version} "
                f"on {used} corrected report(s)"
            )
            with svc.client(headers=svc.admin_headers(), timeout=300) as admin:
                promoted = admin.post(
                    "/admin/promote",
                    json={"pack_dir": str(data / "packs" / "candidate")},
                )
            promoted.raise_for_status()
            gate = promoted.json()
            report_path = data / "regression-report.json"
            report_path.write_text(json.dumps(gate, indent=2))
            echo(
                f"   gate passed; fixed cases {gate['regression']['fixed']}, "
                f"metric deltas {gate['regression']['metrics']['delta']}"
            )
            echo(
                f"   regression report: {report_path} (confusion matrix: "
                f"{gate['regression']['confusion_png']})"
            )
            answer = client.post(
                "/predict", json={"instances": [MISTAKEN_ADELIE]}
            ).json()["predictions"][0]
            echo(
                f"   now serving {answer['model_version']}: "
                f"the reported penguin is {answer['label']}"
            )
            summary |= {
                "promoted_version": gate["model_version"],
                "fixed_label": answer["label"],
                "regression_report": str(report_path),
            }
        echo(
            f"drift reports: {data / 'state' / 'drift'}; "
            f"Evidently workspace: {data / 'state' / 'evidently'}"
        )
        echo(
            "see them: python -m monitoring.cli ui "
            f"--workspace {data / 'state' / 'evidently'} --port {ui_port}"
        )
        if keep_running:
            echo("service left running; Ctrl-C to stop")
            with contextlib.suppress(KeyboardInterrupt):
                svc.process.wait()
    return summary


def _flywheel(
    svc: ServiceProcess, client: httpx.Client, echo: Callable[[str], Any], data: Path
) -> dict[str, Any]:
    admin = svc.admin_headers()

    def window(rows: list[dict[str, float]]) -> str:
        """Send `rows` in one request (one window) and wait until it is judged."""
        before = completed_drift_runs(client)
        send(client, rows, batch=len(rows))
        return wait_for_drift_runs(client, 1, since=before)

    text = window(instances(like_training(300, seed=1)))
    calm = metric(text, "flywheel_drift_detected")
    echo(
        f"1. traffic like training: drift detected = {calm}, "
        f"drift share = {metric(text, 'flywheel_drift_share')}"
    )
    # Each drifted window is new rows: the policy's two windows take two batches.
    text = window(instances(drifted(300, seed=2)))
    early = client.get("/admin/retraining-requests", headers=admin).json()
    echo(
        "2. drifted traffic, first window: drift detected = "
        f"{metric(text, 'flywheel_drift_detected')}, "
        f"drift share = {metric(text, 'flywheel_drift_share')}; "
        f"retraining requests: {len(early)} (two drifted windows needed)"
    )
    text = window(instances(drifted(300, seed=3)))
    requests = client.get("/admin/retraining-requests", headers=admin).json()
    echo(
        "3. second drifted window; retraining requests open: "
        f"{[(r['id'], r['reason']) for r in requests]}"
    )
    drift = next((r["details"] for r in requests if r["reason"] == "drift"), None)
    if drift is not None:
        echo(
            f"   {drift['summary']}; on {drift['consecutive_windows']} "
            f"consecutive windows of new rows (this one {drift['window_rows']} rows, "
            f"{drift['distinct_rows']} distinct; at least "
            f"{DEMO_SETTINGS['FLYWHEEL_MONITORING__DRIFT_MIN_WINDOW_ROWS']}, at most "
            f"{DEMO_SETTINGS['FLYWHEEL_MONITORING__DRIFT_WINDOW_ROWS']}; "
            f"{DEMO_SETTINGS['FLYWHEEL_MONITORING__RETRAIN_CONSECUTIVE_WINDOWS']} "
            "drifted windows open a request)"
        )
    wrong = client.post("/predict", json={"instances": [MISTAKEN_ADELIE]}).json()[
        "predictions"
    ][0]
    report = client.post(
        "/report",
        json={
            "prediction_id": wrong["prediction_id"],
            "expected_label": "Adelie",
            "categories": ["similar species"],
        },
    ).json()
    client.patch(
        f"/admin/reports/{report['id']}", json={"status": "confirmed"}, headers=admin
    ).raise_for_status()
    echo(
        f"4. user reported {wrong['label']} (should be Adelie); "
        f"triage confirmed report {report['id']}"
    )
    return {
        "calm_drift_detected": calm,
        "drift_detected": metric(text, "flywheel_drift_detected"),
        "requests_after_one_drifted_window": len(early),
        "retraining_requests": len(requests),
        "drifted_features": drift.get("drifted_features", []) if drift else [],
        "reported_label": wrong["label"],
        "snapshots": len(list((data / "state" / "evidently").rglob("*.json"))),
    }
