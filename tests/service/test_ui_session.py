"""Signed session cookies and CSRF tokens of the admin pages (pure logic)."""

from __future__ import annotations

import pytest

from common.errors import Forbidden
from service.ui.auth import safe_next
from service.ui.session import SessionSigner

TOKEN = "test-admin-token-0123456789"


def test_issued_session_reads_back_until_it_expires() -> None:
    signer = SessionSigner(TOKEN, max_age_s=60)
    cookie = signer.issue(now=1000)
    assert signer.read(cookie, now=1059) is not None
    assert signer.read(cookie, now=1061) is None
    assert signer.read(cookie, now=999) is None  # issued in the future


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),
        lambda c: "e30" + c[3:],
        lambda c: c.split(".")[0],
        lambda c: "",
    ],
)
def test_tampered_cookie_is_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    signer = SessionSigner(TOKEN, max_age_s=60)
    assert signer.read(tamper(signer.issue())) is None


def test_a_new_admin_token_ends_every_session() -> None:
    cookie = SessionSigner(TOKEN, max_age_s=60).issue()
    assert SessionSigner(TOKEN + "x", max_age_s=60).read(cookie) is None


def test_csrf_token_belongs_to_one_session() -> None:
    signer = SessionSigner(TOKEN, max_age_s=60)
    a, b = signer.read(signer.issue()), signer.read(signer.issue())
    assert a is not None and b is not None
    signer.check_csrf(a.nonce, signer.csrf_token(a.nonce))
    with pytest.raises(Forbidden, match="CSRF"):
        signer.check_csrf(a.nonce, signer.csrf_token(b.nonce))
    with pytest.raises(Forbidden):
        signer.check_csrf(a.nonce, None)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/admin/ui/review", "/admin/ui/review"),
        ("https://evil.example/admin/ui/", "/admin/ui/reports"),
        ("//evil.example", "/admin/ui/reports"),
        (None, "/admin/ui/reports"),
    ],
)
def test_login_redirects_only_to_admin_pages(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected
