"""With the database unreachable the service keeps predicting and logging (the
prediction log is files, not SQL), refuses reports with 503 + Retry-After (storing
nothing), and recovers by itself once it is back.

The service reaches PostgreSQL (a database of this module's own) through a loopback
TCP proxy that the tests cut and restore; the machine's shared server is never
stopped. The store is checked directly, not through the proxy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.dbservers import TcpProxy, create_database, drop_database
from tests.reliability.helpers import (
    ADELIE,
    direct_report,
    metric,
    serving,
    stored_reports,
    wait_until,
)
from tests.servers import ServiceProcess

pytestmark = pytest.mark.integration

DROPPED = "flywheel_prediction_log_dropped_rows_total"


@dataclass
class Outage:
    svc: ServiceProcess
    proxy: TcpProxy
    direct_url: str  # the database itself, bypassing the proxy

    def predict(self, client: httpx.Client, **body: object) -> str:
        r = client.post("/predict", json={"instances": [ADELIE], **body})
        assert r.status_code == 200, r.text
        return str(r.json()["predictions"][0]["prediction_id"])

    def dropped(self, client: httpx.Client) -> float:
        return metric(client.get("/metrics").text, DROPPED)

    def logged(self, client: httpx.Client, prediction_id: str) -> bool:
        r = client.get(
            f"/admin/predictions/{prediction_id}", headers=self.svc.admin_headers()
        )
        return r.status_code == 200


@pytest.fixture(scope="module")
def outage(
    tmp_path_factory: pytest.TempPathFactory, default_pack: Path, postgres_server: str
) -> Iterator[Outage]:
    url = create_database(postgres_server)
    u = make_url(url)
    proxy = TcpProxy(u.host or "127.0.0.1", u.port or 5432)
    try:
        with serving(
            tmp_path_factory.mktemp("outage"),
            default_pack,
            FLYWHEEL_FEEDBACK__DATABASE_URL=proxy.url_for(url),
            FLYWHEEL_FEEDBACK__REPORT_RATE_PER_MINUTE="1000",
        ) as svc:
            yield Outage(svc, proxy, url)
    finally:
        proxy.close()
        drop_database(url)


def test_predictions_are_served_and_logged_while_the_database_is_down(
    outage: Outage,
) -> None:
    """The prediction log needs no database: nothing is dropped in an outage."""
    with outage.svc.client() as c:
        outage.proxy.cut()
        try:
            ids = [outage.predict(c) for _ in range(20)]
            assert c.get("/readyz").status_code == 200
            assert all(outage.logged(c, pid) for pid in ids)
        finally:
            outage.proxy.restore()
        assert outage.dropped(c) == 0
        after = outage.predict(c)
        assert outage.logged(c, after)
    assert outage.svc.process.poll() is None


def test_reports_get_503_with_retry_after_and_are_not_half_written(
    outage: Outage,
) -> None:
    key = "outage-report-1"
    with outage.svc.client() as c:
        logged = outage.predict(c)
        outage.proxy.cut()
        try:
            direct = c.post(
                "/report", json=direct_report(), headers={"Idempotency-Key": key}
            )
            by_id = c.post("/report", json={"prediction_id": logged})
            listing = c.get("/admin/reports", headers=outage.svc.admin_headers())
        finally:
            outage.proxy.restore()
        for r in (direct, by_id, listing):
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "database_unavailable"
        assert key not in {k for _, k in stored_reports(outage.direct_url)}

        # Back: the same submission is stored now, as new, without a restart.
        def stored_again() -> httpx.Response | None:
            r = c.post(
                "/report", json=direct_report(), headers={"Idempotency-Key": key}
            )
            return r if r.status_code != 503 else None

        again = wait_until(stored_again, timeout_s=20, interval_s=0.5)
    assert again.status_code == 201, again.text
    assert [k for _, k in stored_reports(outage.direct_url)].count(key) == 1
    assert outage.svc.process.poll() is None
