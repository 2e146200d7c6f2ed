"""What every admin page shares: templates, the session check, forms, error pages.

Pages are routes of one `APIRouter` whose route class (`PageRoute`) turns every
error into a page for people: a `ServiceError` keeps its status and message, an
invalid form or query names the field, and a request without a session is sent
to the login form (a GET) or refused with 401 (anything else).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.responses import HTMLResponse, RedirectResponse, Response

from common.errors import ServiceError, Unauthorized
from service.deps import worker_of
from service.ui.session import SessionSigner, UISession
from service.worker import Worker

log = logging.getLogger(__name__)

PREFIX = "/admin/ui"
SESSION_COOKIE = "flywheel_ui"
LOGIN_COOKIE = "flywheel_ui_login"
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
NAV = (
    ("reports", "Reports"),
    ("review", "Review"),
    ("analysis", "Error analysis"),
    ("data", "Data"),
    ("retraining", "Retraining"),
    ("shadow", "Shadow run"),
)


class LoginRequired(Unauthorized):
    code = "login_required"

    def __init__(self) -> None:
        super().__init__("log in to the admin pages first", field="session")


@dataclass(frozen=True)
class Page:
    """The logged-in request a page handler works for."""

    request: Request
    worker: Worker
    session: UISession
    signer: SessionSigner

    @property
    def csrf(self) -> str:
        return self.signer.csrf_token(self.session.nonce)

    def render(
        self, template: str, *, status_code: int = 200, **context: Any
    ) -> Response:
        return render(
            template,
            status_code=status_code,
            csrf=self.csrf,
            logged_in=True,
            active=_nav_key(template),
            **context,
        )

    async def form(self) -> Mapping[str, Any]:
        """The submitted form, after its CSRF token is checked (403 if wrong)."""
        form = await self.request.form()
        self.signer.check_csrf(self.session.nonce, _str(form.get("csrf_token")))
        return form


def _nav_key(template: str) -> str:
    """The navigation entry a template belongs to (`report.html` -> `reports`)."""
    name = template.split(".")[0]
    return next((k for k, _ in NAV if name.startswith(k.rstrip("s"))), "")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def render(template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("logged_in", False)
    context.setdefault("csrf", "")
    context.setdefault("active", "")
    html = TEMPLATES.get_template(template).render(prefix=PREFIX, nav=NAV, **context)
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Cache-Control": "no-store",
            # Every asset is local; nothing may be framed or loaded from elsewhere.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
            "style-src 'self'; frame-ancestors 'none'; form-action 'self'",
            "X-Content-Type-Options": "nosniff",
        },
    )


def signer_for(worker: Worker) -> SessionSigner:
    token = worker.settings.security.admin_token
    if token is None:
        raise Unauthorized(
            "admin pages are disabled: "
            "set FLYWHEEL_SECURITY__ADMIN_TOKEN to enable them"
        )
    return SessionSigner(
        token.get_secret_value(), max_age_s=worker.settings.ui.session_max_age_s
    )


def page(request: Request) -> Page:
    """FastAPI dependency: the logged-in page request, or `LoginRequired`."""
    worker = worker_of(request)
    signer = signer_for(worker)
    session = signer.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise LoginRequired()
    return Page(request=request, worker=worker, session=session, signer=signer)


def redirect(path: str) -> RedirectResponse:
    """303 See Other: after a form, the browser GETs the next page."""
    return RedirectResponse(path, status_code=303)


def error_page(request: Request, exc: Exception) -> Response:
    if isinstance(exc, LoginRequired) and request.method in ("GET", "HEAD"):
        target = request.url.path + (
            f"?{request.url.query}" if request.url.query else ""
        )
        return redirect(f"{PREFIX}/login?next={quote(target, safe='')}")
    if isinstance(exc, RequestValidationError | ValidationError):
        errors = list(exc.errors())
        first = errors[0] if errors else {}
        field = ".".join(
            str(p) for p in first.get("loc", ()) if p not in ("body", "query")
        )
        status, title = 422, "Not allowed"
        message = f"{field or 'form'}: {first.get('msg', 'invalid value')}"
    elif isinstance(exc, ServiceError) and exc.status_code < 500:
        status, title, message = (
            exc.status_code,
            exc.code.replace("_", " "),
            exc.message,
        )
    elif isinstance(exc, ServiceError) and exc.code.endswith("unavailable"):
        status, title, message = 503, "Unavailable", exc.message
    else:
        log.exception("admin page failed", exc_info=exc)
        status, title, message = 500, "Internal error", "internal error (logged)"
    headers = exc.headers() if isinstance(exc, ServiceError) else {}
    response = render(
        "error.html",
        status_code=status,
        title=title,
        message=message,
        logged_in=request.cookies.get(SESSION_COOKIE) is not None,
    )
    response.headers.update(headers)
    return response


class PageRoute(APIRoute):
    """An admin page route: errors become pages (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return error_page(request, exc)

        return guarded


def clean_query(request: Request) -> dict[str, str]:
    """Query parameters with blank values dropped (an empty filter means "any")."""
    return {k: v.strip() for k, v in request.query_params.items() if v.strip()}
