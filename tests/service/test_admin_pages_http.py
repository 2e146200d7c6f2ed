"""The admin pages' authentication over real HTTP: no session → the login form
(GET) or 401 (POST); a wrong token → 401; a form without its CSRF token → 403; the
session cookie is HttpOnly, SameSite=Strict and limited to the pages' path.
Also: `/docs` is served with local Swagger UI assets only."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.servers import ADMIN_TOKEN, ServiceProcess

pytestmark = pytest.mark.integration


def login_form(c: httpx.Client) -> str:
    r = c.get("/admin/ui/login")
    assert r.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
    assert match is not None
    return match.group(1)


@contextmanager
def logged_in(svc: ServiceProcess) -> Iterator[tuple[httpx.Client, str]]:
    """A client holding a session, and the CSRF token of its forms."""
    with svc.client() as c:
        yield c, session_csrf(c)


def session_csrf(c: httpx.Client) -> str:
    csrf = login_form(c)
    r = c.post(
        "/admin/ui/login",
        data={"csrf_token": csrf, "token": ADMIN_TOKEN, "next": "/admin/ui/review"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/admin/ui/review"
    page = c.get("/admin/ui/review")
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def test_pages_without_a_session_redirect_to_login_or_refuse(
    running_service: ServiceProcess,
) -> None:
    with running_service.client() as c:
        r = c.get("/admin/ui/reports?status=new")
        assert r.status_code == 303
        assert r.headers["location"] == (
            "/admin/ui/login?next=%2Fadmin%2Fui%2Freports%3Fstatus%3Dnew"
        )
        r = c.post("/admin/ui/reports/abc", data={"status": "confirmed"})
        assert r.status_code == 401
        assert "log in to the admin pages first" in r.text
        forged = c.get("/admin/ui/reports", cookies={"flywheel_ui": "e30.abc"})
        assert forged.status_code == 303


def test_wrong_token_or_missing_login_csrf_is_refused(
    running_service: ServiceProcess,
) -> None:
    with running_service.client() as c:
        csrf = login_form(c)
        wrong = c.post("/admin/ui/login", data={"csrf_token": csrf, "token": "nope"})
        assert wrong.status_code == 401 and "wrong admin token" in wrong.text
        assert "flywheel_ui=" not in wrong.headers.get("set-cookie", "").replace(
            "flywheel_ui_login=", ""
        )
        no_csrf = c.post("/admin/ui/login", data={"token": ADMIN_TOKEN})
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text


def test_session_cookie_is_httponly_strict_and_scoped(
    running_service: ServiceProcess,
) -> None:
    with running_service.client() as c:
        csrf = login_form(c)
        r = c.post("/admin/ui/login", data={"csrf_token": csrf, "token": ADMIN_TOKEN})
        cookie = next(
            v for v in r.headers.get_list("set-cookie") if v.startswith("flywheel_ui=")
        )
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/admin/ui"} <= attributes


def test_form_with_a_bad_csrf_token_is_403(running_service: ServiceProcess) -> None:
    with logged_in(running_service) as (c, csrf):
        r = c.post("/admin/ui/categories", data={"csrf_token": "x", "name": "a"})
        assert r.status_code == 403 and "CSRF" in r.text
        with logged_in(running_service) as (_, other_csrf):
            pass
        r = c.post("/admin/ui/categories", data={"csrf_token": other_csrf, "name": "a"})
        assert r.status_code == 403
        ok = c.post("/admin/ui/categories", data={"csrf_token": csrf, "name": "a"})
        assert ok.status_code == 303


def test_bad_page_input_is_a_4xx_page_naming_the_field(
    running_service: ServiceProcess,
) -> None:
    with logged_in(running_service) as (c, csrf):
        r = c.get("/admin/ui/reports?date_from=yesterday")
        assert r.status_code == 422 and "date_from" in r.text
        r = c.get("/admin/ui/reports/no-such-report")
        assert r.status_code == 404 and "no-such-report" in r.text
        r = c.post("/admin/ui/categories", data={"csrf_token": csrf, "name": " "})
        assert r.status_code == 422 and "1 to 64 characters" in r.text
        r = c.post(
            "/admin/ui/retraining/999999", data={"csrf_token": csrf, "action": "done"}
        )
        assert r.status_code == 404


def test_docs_page_uses_only_local_assets(running_service: ServiceProcess) -> None:
    with running_service.client() as c:
        page = c.get("/docs")
        assert page.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(s.startswith("/") for s in sources), sources
        for asset in (
            "/docs-assets/swagger-ui-bundle.js",
            "/docs-assets/swagger-ui.css",
        ):
            assert asset in sources
            r = c.get(asset)
            assert r.status_code == 200 and len(r.content) > 10_000
        assert c.get("/openapi.json").status_code == 200


def test_retraining_request_is_acknowledged_then_closed_with_notes(
    running_service: ServiceProcess,
) -> None:
    from feedback import store
    from feedback.db import make_engine, session_factory

    engine = make_engine(f"sqlite:///{running_service.data_dir / 'flywheel.db'}")
    try:
        with session_factory(engine)() as session:
            opened = store.open_retraining_request(
                session, reason="drift", details={"drift_share": 0.75}
            )
            request_id = opened.id
    finally:
        engine.dispose()
    with logged_in(running_service) as (c, csrf):
        path = f"/admin/ui/retraining/{request_id}"
        r = c.post(
            path, data={"csrf_token": csrf, "action": "acknowledge", "note": "seen"}
        )
        assert r.status_code == 303
        page = c.get("/admin/ui/retraining?status=acknowledged").text
        assert f'data-request="{request_id}"' in page and "seen" in page
        r = c.post(path, data={"csrf_token": csrf, "action": "done", "note": "v2 out"})
        assert r.status_code == 303
        r = c.post(path, data={"csrf_token": csrf, "action": "done"})
        assert r.status_code == 422 and "already closed" in r.text
    with running_service.client(headers=running_service.admin_headers()) as c:
        rows = c.get("/admin/retraining-requests", params={"status": "done"}).json()
    (row,) = [row for row in rows if row["id"] == request_id]
    assert row["note"] == "v2 out"
    assert row["acknowledged_at"] is not None and row["closed_at"] is not None


def test_latest_drift_report_is_one_click_away(running_service: ServiceProcess) -> None:
    drift_dir = running_service.data_dir / "drift"
    with logged_in(running_service) as (c, _):
        if not list(drift_dir.glob("drift-*.html")):
            assert c.get("/admin/ui/drift/latest").status_code == 404
        drift_dir.mkdir(parents=True, exist_ok=True)
        (drift_dir / "drift-29991231T000000-v9.html").write_text("<p>drift v9</p>")
        page = c.get("/admin/ui/retraining").text
        assert 'href="/admin/ui/drift/latest"' in page and 'href="/metrics"' in page
        assert "drift v9" in c.get("/admin/ui/drift/latest").text
