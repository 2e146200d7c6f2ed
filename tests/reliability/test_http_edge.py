"""The HTTP edge, before any route: whose forwarded-for headers count as the
client, and the request-header limits (431), on real servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings
from tests.reliability.conftest import OPEN_REPORTS_PER_MINUTE
from tests.reliability.helpers import (
    ADELIE,
    direct_report,
    report_codes_until_limited,
    serving,
)
from tests.servers import ServiceProcess

PROXIED_REPORTS_PER_MINUTE = 2
MAX_HEADER_BYTES = 8192
MAX_HEADERS = 30


@pytest.fixture(scope="module")
def proxied(
    tmp_path_factory: pytest.TempPathFactory, default_pack: Path
) -> Iterator[ServiceProcess]:
    """A service behind a (pretend) reverse proxy on loopback, small header limits."""
    with serving(
        tmp_path_factory.mktemp("proxied"),
        default_pack,
        FLYWHEEL_HTTP__TRUSTED_PROXIES="127.0.0.1",
        FLYWHEEL_FEEDBACK__REPORT_RATE_PER_MINUTE=str(PROXIED_REPORTS_PER_MINUTE),
        FLYWHEEL_HTTP__MAX_HEADER_BYTES=str(MAX_HEADER_BYTES),
        FLYWHEEL_HTTP__MAX_HEADERS=str(MAX_HEADERS),
    ) as svc:
        yield svc


@pytest.mark.integration
def test_forwarded_for_from_loopback_never_makes_a_new_client(
    open_service: ServiceProcess,
) -> None:
    """No proxy is trusted by default: a fresh X-Forwarded-For per request is
    still the same client, so the rate limit is reached."""
    codes = report_codes_until_limited(
        open_service,
        OPEN_REPORTS_PER_MINUTE + 1,
        lambda i: {
            "X-Forwarded-For": f"203.0.113.{i + 1}",
            "Idempotency-Key": f"xff-{uuid.uuid4().hex}",
        },
    )
    assert codes[-1] == 429, codes


@pytest.mark.integration
def test_a_trusted_proxy_forwards_the_client_address(proxied: ServiceProcess) -> None:
    def send(client: str) -> int:
        with proxied.client() as c:
            return c.post(
                "/report",
                json=direct_report(),
                headers={
                    "X-Forwarded-For": client,
                    "Idempotency-Key": uuid.uuid4().hex,
                },
            ).status_code

    # Each forwarded client has a bucket of its own...
    assert [send(f"198.51.100.{i}") for i in range(1, 5)] == [201] * 4
    # ...and one forwarded client is limited like any other.
    same = [send("198.51.100.200") for _ in range(PROXIED_REPORTS_PER_MINUTE + 1)]
    assert same == [201] * PROXIED_REPORTS_PER_MINUTE + [429], same


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/predict", "/livez", "/metrics", "/admin/reports"])
def test_headers_over_the_size_limit_get_431_on_every_route(
    proxied: ServiceProcess, path: str
) -> None:
    with proxied.client() as c:
        r = c.post(
            path,
            json={"instances": [ADELIE]},
            headers={"X-Padding": "p" * MAX_HEADER_BYTES},
        )
    assert r.status_code == 431, r.text
    error = r.json()["error"]
    assert error["code"] == "request_header_fields_too_large"
    assert error["field"] == "headers" and str(MAX_HEADER_BYTES) in error["message"]


@pytest.mark.integration
def test_headers_within_the_limits_are_served(proxied: ServiceProcess) -> None:
    headers = {f"X-Extra-{i}": "v" for i in range(MAX_HEADERS - 10)}
    headers["X-Padding"] = "p" * (MAX_HEADER_BYTES // 2)
    with proxied.client() as c:
        r = c.post("/predict", json={"instances": [ADELIE]}, headers=headers)
    assert r.status_code == 200, r.text


@pytest.mark.integration
def test_too_many_headers_get_431(proxied: ServiceProcess) -> None:
    headers = {f"X-Extra-{i}": "v" for i in range(MAX_HEADERS + 1)}
    with proxied.client() as c:
        r = c.post("/predict", json={"instances": [ADELIE]}, headers=headers)
    assert r.status_code == 431, r.text
    assert str(MAX_HEADERS) in r.json()["error"]["message"]


@pytest.mark.integration
def test_a_one_megabyte_header_gets_431_at_the_default_limit(
    open_service: ServiceProcess,
) -> None:
    with open_service.client() as c:
        r = c.get("/info", headers={"X-Padding": "p" * 1_000_000})
        assert r.status_code == 431, r.status_code
        assert c.get("/info").status_code == 200  # and the service still answers


@pytest.mark.parametrize("entry", ["localhost", "10.0.0.1,not-an-ip", "*"])
def test_trusted_proxies_must_be_addresses_or_networks(entry: str) -> None:
    with pytest.raises(ValidationError, match="not an IP address or network"):
        Settings(http={"trusted_proxies": entry})  # type: ignore[arg-type]


def test_trusted_proxies_default_to_none() -> None:
    assert Settings().http.trusted_proxies == ""
    spaced = Settings(http={"trusted_proxies": " 10.0.0.5 , 10.1.0.0/16"})  # type: ignore[arg-type]
    assert spaced.http.trusted_proxies == "10.0.0.5,10.1.0.0/16"
