"""Log in to the admin pages with the admin token, and log out.

The login form carries a CSRF token bound to a short-lived random cookie (there is
no session yet to bind it to); a right token sets the signed session cookie:
HttpOnly (scripts cannot read it), SameSite=Strict (other sites cannot send it)
and limited to the pages' path.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.deps import worker_of
from service.ui.common import (
    LOGIN_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    Page,
    PageRoute,
    page,
    redirect,
    render,
    signer_for,
)

router = APIRouter(route_class=PageRoute)
LOGIN_COOKIE_MAX_AGE_S = 600


def safe_next(target: str | None) -> str:
    """Only a path of the admin pages: never an open redirect to another site."""
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//"):
        return target
    return f"{PREFIX}/reports"


def _set_cookie(
    response: Response, request: Request, name: str, value: str, age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=worker_of(request).settings.ui.cookie_secure,
    )


def _login_form(
    request: Request, *, status_code: int = 200, problem: str | None = None
) -> Response:
    signer = signer_for(worker_of(request))
    nonce = secrets.token_hex(16)
    response = render(
        "login.html",
        status_code=status_code,
        csrf=signer.csrf_token(f"login:{nonce}"),
        next=safe_next(request.query_params.get("next")),
        problem=problem,
    )
    _set_cookie(response, request, LOGIN_COOKIE, nonce, LOGIN_COOKIE_MAX_AGE_S)
    return response


@router.get(f"{PREFIX}/login", include_in_schema=False)
def login_form(request: Request) -> Response:
    return _login_form(request)


@router.post(f"{PREFIX}/login", include_in_schema=False)
async def login(request: Request) -> Response:
    worker = worker_of(request)
    signer = signer_for(worker)
    form = await request.form()
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    token = form.get("csrf_token")
    signer.check_csrf(f"login:{nonce}", token if isinstance(token, str) else None)
    given = form.get("token")
    admin = worker.settings.security.admin_token
    assert admin is not None  # signer_for refused otherwise
    if not isinstance(given, str) or not hmac.compare_digest(
        given.encode(), admin.get_secret_value().encode()
    ):
        return _login_form(request, status_code=401, problem="wrong admin token")
    target = form.get("next")
    response = redirect(safe_next(target if isinstance(target, str) else None))
    _set_cookie(response, request, SESSION_COOKIE, signer.issue(), signer.max_age_s)
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


@router.post(f"{PREFIX}/logout", include_in_schema=False)
async def logout(p: Annotated[Page, Depends(page)]) -> Response:
    await p.form()
    response = redirect(f"{PREFIX}/login")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.get(PREFIX, include_in_schema=False)
@router.get(f"{PREFIX}/", include_in_schema=False)
def home(p: Annotated[Page, Depends(page)]) -> Response:
    return redirect(f"{PREFIX}/reports")
