"""Locust scenarios: a realistic mix of users of the inference service.

    SinglePredictionUser   one penguin per request; now and then one the policy's
                           input bounds reject (must be a 422 input_out_of_bounds)
    BatchPredictionUser    100 penguins per request, as rows or in column form
    ContextUser            one penguin with its island as the deployment context
    ReportUser             predicts, then reports the answer as bad by
                           prediction_id with an Idempotency-Key; every third
                           report is retried with the same key (must replay: 200)
    HealthUser             /livez, /readyz, /info

Payloads are real penguins (`palmerpenguins`), split at start into those the served
policy accepts and those it rejects. Only loopback hosts are allowed.

Run it against a service started with a report rate limit that the load will not
hit (the limit is per client and per worker, and all users share 127.0.0.1):

    FLYWHEEL_FEEDBACK__REPORT_RATE_PER_MINUTE=1000000 \\
        .venv/bin/python -m service.cli serve --port 3000 &
    mkdir -p loadtests/results
    .venv/bin/locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:3000 \\
        -u 20 -r 10 -t 60s --only-summary --exit-code-on-error 1 \\
        --csv loadtests/results/locust --html loadtests/results/locust.html \\
        --json-file loadtests/results/locust

The CSV files are rewritten every second and can miss the last one; the JSON file
(`locust.json`) is written once at the end with the final numbers.

Add class names at the end to run only some scenarios (`... ReportUser`).
`loadtests/results/` is git-ignored. CI runs a 5-second version
(`tests/loadtests/test_locust_smoke.py`).
"""

from __future__ import annotations

import random
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from locust import FastHttpUser, between, events, task

# locust puts this file's folder on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests.payloads import (
    Penguin,
    columns_body,
    instances_body,
    penguins,
    report_body,
    split_by_service,
)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
BATCH_ROWS = 100
JSON = {"Content-Type": "application/json"}
ACCEPTED: list[Penguin] = []
REJECTED: list[Penguin] = []


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    # At start-up, before the run-time clock starts: loading the data set costs
    # seconds (pandas), which a short run would otherwise spend without users.
    host = environment.host or ""
    if urlsplit(host).hostname not in LOOPBACK:
        raise SystemExit(f"load tests run against loopback only, not {host!r}")
    accepted, rejected = split_by_service(host.rstrip("/"), penguins())
    ACCEPTED[:] = accepted
    REJECTED[:] = rejected


def _pool() -> list[Penguin]:
    return ACCEPTED or list(penguins())


def _ok_body(response: Any) -> dict[str, Any] | None:
    """The JSON body of a 200 answer; otherwise the response is marked failed."""
    if response.status_code != 200:
        response.failure(f"status {response.status_code}: {response.text[:200]}")
        return None
    return response.json()  # type: ignore[no-any-return]


def _check_predictions(response: Any, rows: int) -> dict[str, Any] | None:
    """Mark the response failed unless it holds `rows` answered predictions."""
    body = _ok_body(response)
    if body is None:
        return None
    predictions = body.get("predictions", [])
    if len(predictions) != rows:
        response.failure(f"{len(predictions)} predictions for {rows} rows")
        return None
    if any("prediction_id" not in p or "model_version" not in p for p in predictions):
        response.failure("prediction without id or version")
        return None
    response.success()
    return body  # type: ignore[no-any-return]


def _check_columns(response: Any, rows: int) -> None:
    """Mark the response failed unless it is a column-form answer for `rows` rows."""
    body = _ok_body(response)
    if body is None:
        return
    columns = body.get("columns", {})
    lengths = {
        len(columns.get(name, ())) for name in ("prediction_id", "label", "abstained")
    }
    lengths |= {len(v) for v in columns.get("probabilities", {}).values()}
    if lengths != {rows} or not body.get("model_version") or not body.get("trace"):
        response.failure(f"column answer malformed for {rows} rows: {lengths}")
        return
    response.success()


class SinglePredictionUser(FastHttpUser):
    weight = 8
    wait_time = between(0.005, 0.05)

    @task(10)
    def predict_one(self) -> None:
        body = instances_body([random.choice(_pool())])
        with self.client.post(
            "/predict", json=body, name="/predict 1 row", catch_response=True
        ) as response:
            _check_predictions(response, 1)

    @task(1)
    def predict_out_of_bounds(self) -> None:
        if not REJECTED:
            return
        body = instances_body([random.choice(REJECTED)])
        with self.client.post(
            "/predict",
            json=body,
            name="/predict out of bounds (422)",
            catch_response=True,
        ) as response:
            code = (
                response.json().get("error", {}).get("code") if response.text else None
            )
            if response.status_code == 422 and code == "input_out_of_bounds":
                response.success()
            else:
                response.failure(f"expected 422 input_out_of_bounds, got {code}")


class BatchPredictionUser(FastHttpUser):
    weight = 2
    wait_time = between(0.01, 0.1)

    @task(3)
    def predict_rows(self) -> None:
        body = instances_body(random.choices(_pool(), k=BATCH_ROWS))
        with self.client.post(
            "/predict",
            json=body,
            name=f"/predict {BATCH_ROWS} rows",
            catch_response=True,
        ) as response:
            _check_predictions(response, BATCH_ROWS)

    @task(1)
    def predict_columns(self) -> None:
        body = columns_body(random.choices(_pool(), k=BATCH_ROWS))
        with self.client.post(
            "/predict",
            json=body,
            name=f"/predict {BATCH_ROWS} rows, columns",
            catch_response=True,
        ) as response:
            _check_columns(response, BATCH_ROWS)


class ContextUser(FastHttpUser):
    weight = 4
    wait_time = between(0.005, 0.05)

    @task
    def predict_with_island(self) -> None:
        penguin = random.choice(_pool())
        body = instances_body([penguin], context=penguin.island)
        with self.client.post(
            "/predict", json=body, name="/predict with context", catch_response=True
        ) as response:
            _check_predictions(response, 1)


class ReportUser(FastHttpUser):
    fixed_count = 1  # one reporting client, whatever the user count
    wait_time = between(0.05, 0.2)
    reports = 0

    @task
    def predict_then_report(self) -> None:
        penguin = random.choice(_pool())
        with self.client.post(
            "/predict",
            json=instances_body([penguin], context=penguin.island),
            name="/predict before report",
            catch_response=True,
        ) as response:
            answer = _check_predictions(response, 1)
        if answer is None:
            return
        prediction_id = answer["predictions"][0]["prediction_id"]
        body = report_body(prediction_id, penguin.label)
        key = str(uuid.uuid4())
        headers = {**JSON, "Idempotency-Key": key}
        with self.client.post(
            "/report", json=body, headers=headers, name="/report", catch_response=True
        ) as response:
            if response.status_code != 201:
                response.failure(
                    f"status {response.status_code}: {response.text[:200]}"
                )
                return
            report_id = response.json().get("id")
        self.reports += 1
        if self.reports % 3 == 1:
            with self.client.post(
                "/report",
                json=body,
                headers=headers,
                name="/report retry (same key)",
                catch_response=True,
            ) as response:
                replayed = response.json().get("id") if response.text else None
                if response.status_code != 200 or replayed != report_id:
                    response.failure(
                        f"retry: status {response.status_code}, id {replayed} "
                        f"!= {report_id}"
                    )


class HealthUser(FastHttpUser):
    fixed_count = 1  # one prober, like a load balancer
    wait_time = between(0.2, 0.5)

    @task
    def probes(self) -> None:
        for path in ("/livez", "/readyz"):
            self.client.get(path, name=path)
        with self.client.get("/info", name="/info", catch_response=True) as response:
            if response.status_code != 200 or "model_version" not in response.text:
                response.failure(f"status {response.status_code}")
