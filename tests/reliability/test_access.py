"""Who may call what, and how much: admin token, API key, report rate limit, body
size limit, secrets kept out of the log, and the policy's "do not store inputs".

Most tests share one keyed service (API key, 3 reports a minute, 4 KiB bodies, a
policy with `store_inputs: false`); the rate-limit spoofing test uses the open one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.reliability.conftest import OPEN_REPORTS_PER_MINUTE
from tests.reliability.helpers import (
    ADELIE,
    DEFAULT_POLICY,
    direct_report,
    report_codes_until_limited,
    serving,
    write_policy,
)
from tests.servers import ADMIN_TOKEN, ServiceProcess

pytestmark = pytest.mark.integration

API_KEY = "test-api-key-0123456789abcdef"
MAX_BODY_BYTES = 4096
REPORTS_PER_MINUTE = 3
POLICY_VERSION = "no-inputs-1"
KEY = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory, default_pack: Path
) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("keyed")
    policy = write_policy(
        root / "no-inputs.yaml", version=POLICY_VERSION, store_inputs=False
    )
    with serving(
        root / "svc",
        default_pack,
        FLYWHEEL_SECURITY__API_KEY=API_KEY,
        FLYWHEEL_FEEDBACK__REPORT_RATE_PER_MINUTE=str(REPORTS_PER_MINUTE),
        FLYWHEEL_SERVING__MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        FLYWHEEL_GUARDRAILS__POLICY_PATH=str(policy),
    ) as svc:
        yield svc


def _policy_yaml(version: str) -> str:
    """A valid policy (inputs still not stored) under another version."""
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    policy.update(version=version, store_inputs=False)
    return yaml.safe_dump(policy)


# (method, path, JSON body or YAML text) of every admin route.
ADMIN_ROUTES = [
    ("GET", "/admin/reports", None),
    ("GET", "/admin/reports/0123456789abcdef", None),
    ("PATCH", "/admin/reports/0123456789abcdef", {"status": "confirmed"}),
    ("GET", "/admin/predictions/0123456789abcdef", None),
    ("GET", "/admin/policy", None),
    ("PUT", "/admin/policy", "intruder"),
    ("POST", "/admin/promote", {"pack_dir": "/nonexistent/pack"}),
]
BAD_CREDENTIALS = [
    pytest.param(None, id="none"),
    pytest.param("Bearer wrong-token", id="wrong"),
    pytest.param(f"Bearer {ADMIN_TOKEN[:-1]}", id="prefix-of-token"),
    pytest.param(f"Bearer {ADMIN_TOKEN}x", id="token-plus-one"),
    pytest.param(f"Basic {ADMIN_TOKEN}", id="other-scheme"),
    pytest.param(ADMIN_TOKEN, id="no-scheme"),
    pytest.param(f"Bearer {API_KEY}", id="client-api-key"),
]


def _call(
    c: httpx.Client, method: str, path: str, body: object, headers: dict[str, str]
) -> httpx.Response:
    if isinstance(body, str):  # a policy: YAML text
        headers = {**headers, "Content-Type": "application/yaml"}
        return c.request(method, path, content=_policy_yaml(body), headers=headers)
    return c.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS)
def test_admin_routes_refuse_missing_or_wrong_credentials(
    keyed: ServiceProcess, credentials: str | None
) -> None:
    headers = {"Authorization": credentials} if credentials else {}
    with keyed.client() as c:
        for method, path, body in ADMIN_ROUTES:
            r = _call(c, method, path, body, headers)
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"]["code"] == "unauthorized"
        # The refused PUT above carried a valid policy: it must not be served.
        assert c.get("/info").json()["policy_version"] == POLICY_VERSION


def test_admin_routes_accept_the_admin_token(keyed: ServiceProcess) -> None:
    with keyed.client() as c:
        statuses = {
            (method, path): _call(c, method, path, body, ADMIN).status_code
            for method, path, body in ADMIN_ROUTES
            if method != "PUT"
        }
        put = _call(c, "PUT", "/admin/policy", POLICY_VERSION, ADMIN)
    assert statuses[("GET", "/admin/reports")] == 200
    assert statuses[("GET", "/admin/policy")] == 200
    for key in [
        ("GET", "/admin/reports/0123456789abcdef"),
        ("PATCH", "/admin/reports/0123456789abcdef"),
        ("GET", "/admin/predictions/0123456789abcdef"),
    ]:
        assert statuses[key] == 404, (key, statuses[key])
    # An unknown pack directory is the caller's mistake, not an auth failure.
    assert 400 <= statuses[("POST", "/admin/promote")] < 500, statuses
    assert statuses[("POST", "/admin/promote")] != 401
    assert put.status_code == 200, put.text
    assert put.json()["policy_version"] == POLICY_VERSION


@pytest.mark.parametrize(
    "credentials",
    [None, "Bearer wrong-key", f"Bearer {ADMIN_TOKEN}", API_KEY],
    ids=["none", "wrong", "admin-token", "no-scheme"],
)
def test_predict_and_report_refuse_a_missing_or_wrong_api_key(
    keyed: ServiceProcess, credentials: str | None
) -> None:
    headers = {"Authorization": credentials} if credentials else {}
    with keyed.client(headers=headers) as c:
        predict = c.post("/predict", json={"instances": [ADELIE]})
        report = c.post(
            "/report", json=direct_report(), headers={"Idempotency-Key": "k"}
        )
    for r in (predict, report):
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"


def test_predict_answers_with_the_api_key(keyed: ServiceProcess) -> None:
    with keyed.client(headers=KEY) as c:
        r = c.post("/predict", json={"instances": [ADELIE]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["policy_version"] == POLICY_VERSION


def test_logged_predictions_hold_no_inputs_when_the_policy_says_so(
    keyed: ServiceProcess,
) -> None:
    with keyed.client() as c:
        r = c.post(
            "/predict", json={"instances": [ADELIE], "context": "Dream"}, headers=KEY
        )
        assert r.status_code == 200, r.text
        pid = r.json()["predictions"][0]["prediction_id"]

        got = c.get(f"/admin/predictions/{pid}", headers=ADMIN)
        assert got.status_code == 200, got.text
        row = got.json()
        report = c.post(
            "/report",
            json={"prediction_id": pid, "expected_label": "Chinstrap"},
            headers={**KEY, "Idempotency-Key": "no-inputs"},
        )
        # A report that sends the measurements itself keeps the bad output only.
        direct = c.post(
            "/report",
            json={"inputs": ADELIE, "bad_output": {"label": "Gentoo"}},
            headers=KEY,
        )
        stored = c.get(f"/admin/reports/{direct.json()['id']}", headers=ADMIN)
    assert report.status_code == 201, report.text
    assert report.json()["inputs"] is None
    assert direct.status_code == 201, direct.text
    assert direct.json()["inputs"] is None and stored.json()["inputs"] is None
    assert stored.json()["bad_output"]["label"] == "Gentoo"
    assert row["inputs"] is None
    assert row["outputs"]["label"] == "Adelie"
    assert row["context"] == "Dream"
    assert row["policy_version"] == POLICY_VERSION


def test_body_up_to_the_limit_is_read_and_one_byte_more_is_413(
    keyed: ServiceProcess,
) -> None:
    body = httpx.Request("POST", "/", json={"instances": [ADELIE]}).content
    at_limit = body + b" " * (MAX_BODY_BYTES - len(body))
    headers = {**KEY, "Content-Type": "application/json"}
    with keyed.client(headers=headers) as c:
        ok = c.post("/predict", content=at_limit)
        over = c.post("/predict", content=at_limit + b" ")
    assert ok.status_code == 200, ok.text
    assert over.status_code == 413, over.text
    assert over.json()["error"]["code"] == "payload_too_large"
    assert str(MAX_BODY_BYTES) in over.json()["error"]["message"]


def _chunks(total: int, size: int = 1024) -> Iterator[bytes]:
    """A body without Content-Length (httpx sends a generator chunked)."""
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


@pytest.mark.parametrize(
    ("method", "path", "ctype"),
    [
        ("POST", "/predict", "application/json"),
        ("POST", "/report", "application/json"),
        ("PUT", "/admin/policy", "application/yaml"),
    ],
)
def test_chunked_body_over_the_limit_is_413(
    keyed: ServiceProcess, method: str, path: str, ctype: str
) -> None:
    token = ADMIN if path.startswith("/admin") else KEY
    with keyed.client(headers={**token, "Content-Type": ctype}) as c:
        r = c.request(method, path, content=_chunks(3 * MAX_BODY_BYTES))
    assert "content-length" not in r.request.headers
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"


def test_chunked_body_under_the_limit_is_served(keyed: ServiceProcess) -> None:
    body = httpx.Request("POST", "/", json={"instances": [ADELIE]}).content
    with keyed.client(headers={**KEY, "Content-Type": "application/json"}) as c:
        r = c.post("/predict", content=iter([body[:10], body[10:]]))
    assert "content-length" not in r.request.headers
    assert r.status_code == 200, r.text


def test_reports_beyond_the_rate_get_429_with_retry_after(
    keyed: ServiceProcess,
) -> None:
    with keyed.client(headers=KEY) as c:
        answers = [
            c.post(
                "/report", json=direct_report(i), headers={"Idempotency-Key": f"r{i}"}
            )
            for i in range(REPORTS_PER_MINUTE + 2)
        ]
    codes = [r.status_code for r in answers]
    # Other tests of this module may have used some of the minute's reports.
    accepted = codes.count(201)
    assert 1 <= accepted <= REPORTS_PER_MINUTE, codes
    assert codes == [201] * accepted + [429] * (len(codes) - accepted), codes
    limited = answers[-1]
    assert limited.json()["error"]["code"] == "too_many_requests"
    assert 1 <= int(limited.headers["retry-after"]) <= 60


def test_rate_limit_ignores_the_authorization_header_when_no_key_is_set(
    open_service: ServiceProcess,
) -> None:
    """Without an API key the header is unchecked: a fresh value per request must
    not be a fresh bucket."""
    codes = report_codes_until_limited(
        open_service,
        OPEN_REPORTS_PER_MINUTE + 1,
        lambda i: {"Authorization": f"Bearer client-{i}", "Idempotency-Key": f"s{i}"},
    )
    assert codes[-1] == 429, codes


def test_no_secret_appears_in_the_server_log(keyed: ServiceProcess) -> None:
    # Runs after the tests above have sent right and wrong tokens of every kind.
    with keyed.client() as c:
        c.get("/admin/reports", headers={"Authorization": "Bearer wrong"})
        c.get("/admin/reports", headers=ADMIN)
        c.post("/predict", json={"instances": [ADELIE]}, headers=KEY)
    log = keyed.log_text()
    assert "Starting production HTTP BentoServer" in log  # the right file
    assert ADMIN_TOKEN not in log
    assert API_KEY not in log
