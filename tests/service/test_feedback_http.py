"""Reports, triage and promotion over real HTTP (issue: feedback flywheel).

A user reports a bad penguin prediction by its id; triage confirms it and it becomes
a regression case; a candidate retrained on it passes the gate and is served
without dropping a request; a deliberately worse candidate that breaks the case is
refused.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import ServiceProcess, running

pytestmark = pytest.mark.integration

ADELIE = {
    "bill_length_mm": 39.1,
    "bill_depth_mm": 18.7,
    "flipper_length_mm": 181,
    "body_mass_g": 3750,
}
# A real Adelie (row 72 of palmerpenguins) that the default model calls Chinstrap.
MISTAKEN_ADELIE = {
    "bill_length_mm": 45.8,
    "bill_depth_mm": 18.9,
    "flipper_length_mm": 197,
    "body_mass_g": 4150,
}


def predict_one(svc: ServiceProcess, row: dict[str, float], **extra: object) -> dict:  # type: ignore[type-arg]
    with svc.client() as c:
        r = c.post("/predict", json={"instances": [row], **extra})
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]  # type: ignore[no-any-return]


def report(svc: ServiceProcess, body: dict, key: str | None = None):  # type: ignore[no-untyped-def,type-arg]
    headers = {"Idempotency-Key": key} if key else {}
    with svc.client() as c:
        return c.post("/report", json=body, headers=headers)


def test_report_by_prediction_id_attaches_input_and_output(
    running_service: ServiceProcess,
) -> None:
    p = predict_one(running_service, ADELIE, context="Dream")
    r = report(
        running_service,
        {
            "prediction_id": p["prediction_id"],
            "expected_label": "Chinstrap",
            "categories": ["Wrong Context"],
            "comment": "field guide says so",
            "reporter": "ranger-7",
        },
    )
    assert r.status_code == 201, r.text
    with running_service.client() as c:
        stored = c.get(
            f"/admin/reports/{r.json()['id']}", headers=running_service.admin_headers()
        ).json()
    assert stored["status"] == "new"
    assert stored["inputs"] == pytest.approx(ADELIE)
    assert stored["bad_output"]["label"] == p["label"]
    assert stored["context"] == "Dream"
    assert stored["model_version"] == p["model_version"]
    assert stored["categories"] == ["wrong context"]


def _report_latency(svc: ServiceProcess) -> tuple[float, float]:
    """(count, sum) of the /report latency histogram in /metrics, all workers."""
    with svc.client() as c:
        text = c.get("/metrics").text
    totals = {"count": 0.0, "sum": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name != "flywheel_request_duration_seconds":
            continue
        for sample in family.samples:
            part = sample.name.rsplit("_", 1)[-1]
            if part in totals and sample.labels.get("endpoint") == "report":
                totals[part] += sample.value
    return totals["count"], totals["sum"]


def test_report_latency_shows_in_metrics(running_service: ServiceProcess) -> None:
    before, _ = _report_latency(running_service)
    p = predict_one(running_service, ADELIE)
    r = report(running_service, {"prediction_id": p["prediction_id"]})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 15  # metric writes are batched per second
    count, seconds = _report_latency(running_service)
    while count < before + 1 and time.monotonic() < deadline:
        time.sleep(0.25)
        count, seconds = _report_latency(running_service)
    assert count >= before + 1
    assert seconds > 0


def test_report_by_prediction_id_echoes_only_what_the_caller_sent(
    running_service: ServiceProcess,
) -> None:
    """The logged inputs are admin data (`/admin/predictions`): a report by id,
    sent without the admin token, must not hand them out."""
    p = predict_one(running_service, ADELIE, context="Dream")
    sent = {"prediction_id": p["prediction_id"], "comment": "looks wrong"}
    anonymous = report(running_service, sent)
    assert anonymous.status_code == 201, anonymous.text
    echo = anonymous.json()
    assert echo["prediction_id"] == p["prediction_id"]
    assert echo["comment"] == "looks wrong"
    for attached in ("inputs", "bad_output", "context", "model_version"):
        assert echo[attached] is None, (attached, echo)
    with running_service.client() as c:
        as_admin = c.post(
            "/report", json=sent, headers=running_service.admin_headers()
        ).json()
    assert as_admin["inputs"] == pytest.approx(ADELIE)
    assert as_admin["context"] == "Dream"


def _client_from(svc: ServiceProcess, address: str) -> httpx.Client:
    """A client whose connections come from another loopback address."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=svc.url, timeout=30, transport=transport)


def test_another_clients_idempotency_key_never_returns_its_report(
    running_service: ServiceProcess,
) -> None:
    key = f"order-42-{uuid.uuid4().hex}"
    alice = {
        "inputs": ADELIE,
        "bad_output": {"label": "Gentoo"},
        "comment": "A's private note",
        "reporter": "alice@example.com",
    }
    bob = {"inputs": MISTAKEN_ADELIE, "bad_output": {"label": "Chinstrap"}}
    with _client_from(running_service, "127.0.0.1") as a:
        first = a.post("/report", json=alice, headers={"Idempotency-Key": key})
    with _client_from(running_service, "127.0.0.2") as b:
        second = b.post("/report", json=bob, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    assert second.json()["id"] != first.json()["id"]
    assert "A's private note" not in second.text
    assert "alice@example.com" not in second.text
    assert second.json()["inputs"] == pytest.approx(MISTAKEN_ADELIE)


def test_same_key_with_another_body_is_a_422_naming_the_conflict(
    running_service: ServiceProcess,
) -> None:
    key = uuid.uuid4().hex
    body = {"inputs": ADELIE, "bad_output": {"label": "Gentoo"}, "comment": "one"}
    first = report(running_service, body, key)
    again = report(running_service, body, key)
    changed = report(running_service, {**body, "comment": "two"}, key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert changed.status_code == 422, changed.text
    error = changed.json()["error"]
    assert error["code"] == "idempotency_conflict"
    assert error["field"] == "Idempotency-Key"
    assert key in error["message"]


def test_report_with_full_input_when_there_is_no_id(
    running_service: ServiceProcess,
) -> None:
    r = report(
        running_service,
        {
            "inputs": ADELIE,
            "bad_output": {"label": "Gentoo"},
            "expected_label": "Adelie",
            "categories": ["blurry"],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["prediction_id"] is None
    assert r.json()["bad_output"]["label"] == "Gentoo"


def test_same_idempotency_key_returns_the_same_report(
    running_service: ServiceProcess,
) -> None:
    p = predict_one(running_service, ADELIE)
    key = uuid.uuid4().hex
    first = report(running_service, {"prediction_id": p["prediction_id"]}, key)
    again = report(running_service, {"prediction_id": p["prediction_id"]}, key)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    with running_service.client() as c:
        listed = c.get(
            "/admin/reports",
            params={"limit": 500},
            headers=running_service.admin_headers(),
        ).json()
    assert [r["id"] for r in listed].count(first.json()["id"]) == 1


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"prediction_id": "0" * 32}, 404, "prediction_id"),
        (
            {
                "inputs": ADELIE,
                "bad_output": {"label": "Adelie"},
                "expected_label": "Emperor",
            },
            422,
            "expected_label",
        ),
        (
            {
                "inputs": {**ADELIE, "wingspan_mm": 3.0},
                "bad_output": {"label": "Adelie"},
            },
            422,
            "wingspan_mm",
        ),
        ({"inputs": ADELIE}, 422, "body"),
        ({"comment": "it was wrong"}, 422, "body"),
    ],
    ids=[
        "unknown-prediction",
        "unknown-expected-label",
        "unknown-feature",
        "no-bad-output",
        "nothing-to-report",
    ],
)
def test_bad_reports_get_a_4xx_naming_the_problem(
    running_service: ServiceProcess,
    body: dict,
    status: int,
    field: str,  # type: ignore[type-arg]
) -> None:
    r = report(running_service, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert field in (error.get("field") or "") + error["message"] + str(
        error.get("errors")
    ), error


def test_a_listing_offset_past_any_store_is_a_422_not_a_500(
    running_service: ServiceProcess,
) -> None:
    with running_service.client(headers=running_service.admin_headers()) as c:
        r = c.get("/admin/reports", params={"offset": 10**27})
        assert r.status_code == 422, r.text
        assert "offset" in r.text
        assert c.get("/admin/reports", params={"offset": 10**9}).json() == []


def test_triage_lists_filters_and_confirms_into_a_regression_case(
    running_service: ServiceProcess,
) -> None:
    p = predict_one(running_service, ADELIE, context="Biscoe")
    created = report(
        running_service,
        {"prediction_id": p["prediction_id"], "categories": ["triage-test"]},
    ).json()
    admin = running_service.admin_headers()
    with running_service.client(headers=admin) as c:
        by_category = c.get("/admin/reports", params={"category": "triage-test"}).json()
        assert [r["id"] for r in by_category] == [created["id"]]
        assert (
            c.get(
                "/admin/reports",
                params={"category": "triage-test", "status": "confirmed"},
            ).json()
            == []
        )
        patched = c.patch(
            f"/admin/reports/{created['id']}",
            json={
                "status": "confirmed",
                "corrected_label": "Adelie",
                "categories": ["triage-test", "mislabel"],
            },
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["regression_case_id"] is not None
        confirmed = c.get(
            "/admin/reports",
            params={"status": "confirmed", "label": "Adelie", "category": "mislabel"},
        ).json()
        assert created["id"] in [r["id"] for r in confirmed]
        bad = c.patch(
            f"/admin/reports/{created['id']}", json={"corrected_label": "Emperor"}
        )
        assert bad.status_code == 422
        missing = c.patch("/admin/reports/nope", json={"status": "rejected"})
        assert missing.status_code == 404


def test_triage_needs_the_admin_token(running_service: ServiceProcess) -> None:
    with running_service.client() as c:
        assert c.get("/admin/reports").status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert c.get("/admin/reports", headers=wrong).status_code == 401


# ---- promotion behind the gate -------------------------------------------------


@pytest.fixture(scope="module")
def promo_service(
    tmp_path_factory: pytest.TempPathFactory, default_pack: Path
) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("promotion")
    pack = shutil.copytree(default_pack, root / "packs" / "served")
    with running(
        root / "data",
        pack,
        FLYWHEEL_SERVING__RELOAD_POLL_S="0.2",
        # A promotion replays the gate inside its request: slow on a busy machine.
        FLYWHEEL_SERVING__REQUEST_TIMEOUT_S="300",
    ) as svc:
        yield svc


def test_reported_case_flows_into_a_promoted_model_and_worse_one_is_refused(
    promo_service: ServiceProcess, default_pack: Path, tmp_path: Path
) -> None:
    svc = promo_service
    admin = svc.admin_headers()
    bad = predict_one(svc, MISTAKEN_ADELIE)
    assert bad["label"] == "Chinstrap"  # the mistake we report
    created = report(
        svc,
        {
            "prediction_id": bad["prediction_id"],
            "expected_label": "Adelie",
            "categories": ["similar species"],
        },
    )
    assert created.status_code == 201, created.text
    with svc.client(headers=admin) as c:
        confirmed = c.patch(
            f"/admin/reports/{created.json()['id']}", json={"status": "confirmed"}
        )
    assert confirmed.json()["regression_case_id"] is not None

    # Retrain on the training data plus the corrected report.
    from feedback.db import make_engine, session_factory
    from feedback.retrain import retrain_default_pack

    engine = make_engine(f"sqlite:///{svc.data_dir / 'flywheel.db'}")
    with session_factory(engine)() as session:
        better, used = retrain_default_pack(session, tmp_path / "better")
    engine.dispose()
    assert used == 1

    # Promote while clients keep predicting: no request may fail.
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with svc.client() as c:
            while not stop.is_set():
                r = c.post("/predict", json={"instances": [ADELIE]})
                if r.status_code != 200:
                    failures.append(r.text)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        with svc.client(headers=admin, timeout=120) as c:
            promoted = c.post(
                "/admin/promote", json={"pack_dir": str(tmp_path / "better")}
            )
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["regression"]["fixed"] == [
        confirmed.json()["regression_case_id"]
    ]
    assert failures == []
    fixed = predict_one(svc, MISTAKEN_ADELIE)
    assert fixed["label"] == "Adelie"
    assert fixed["model_version"] == better.version
    with svc.client() as c:
        assert c.get("/info").json()["model_version"] == better.version
    with svc.client(headers=admin) as c:
        assert (
            c.get(f"/admin/reports/{created.json()['id']}").json()["status"] == "fixed"
        )

    # Rolling back to the old model would bring the reported mistake back: refused.
    with svc.client(headers=admin, timeout=120) as c:
        refused = c.post("/admin/promote", json={"pack_dir": str(default_pack)})
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert "regression case" in error["message"]
    assert error["gate"]["regression"]["newly_broken"] == [
        confirmed.json()["regression_case_id"]
    ]
    assert predict_one(svc, MISTAKEN_ADELIE)["model_version"] == better.version


def test_a_much_weaker_candidate_is_refused_on_test_metrics(
    promo_service: ServiceProcess, tmp_path: Path
) -> None:
    from sklearn.exceptions import ConvergenceWarning

    from packs.build_default import build_default_pack

    with pytest.warns(ConvergenceWarning):  # stopped early on purpose
        build_default_pack(tmp_path / "weak", hidden=(1,), max_iter=3)
    with promo_service.client(headers=promo_service.admin_headers(), timeout=120) as c:
        before = c.get("/info").json()["model_version"]
        r = c.post("/admin/promote", json={"pack_dir": str(tmp_path / "weak")})
        assert r.status_code == 409, r.text
        assert "test accuracy dropped" in r.json()["error"]["message"]
        assert c.get("/info").json()["model_version"] == before


def test_promoting_a_broken_pack_is_a_422(
    promo_service: ServiceProcess, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    with promo_service.client(headers=promo_service.admin_headers()) as c:
        r = c.post("/admin/promote", json={"pack_dir": str(tmp_path / "empty")})
    assert r.status_code == 422
    assert "metadata.json" in r.json()["error"]["message"]
