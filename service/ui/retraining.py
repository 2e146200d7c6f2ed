"""Retraining requests (acknowledge or close with a note) and the monitoring links:
the latest drift report, the Evidently UI, /metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import FileResponse, Response

from common.errors import NotFound
from feedback import store
from feedback.retraining_requests import act_on_request
from monitoring.drift_job import HTML_PREFIX
from service.ui.common import PREFIX, Page, PageRoute, clean_query, page, redirect

router = APIRouter(route_class=PageRoute)
SHOWN = ("open", "acknowledged", "done", "dismissed")


def latest_drift_report(drift_dir: Path) -> Path | None:
    """The newest HTML drift report the drift job wrote, if any."""
    reports = sorted(drift_dir.glob(f"{HTML_PREFIX}*.html"))
    return reports[-1] if reports else None


@router.get(f"{PREFIX}/retraining", include_in_schema=False)
def requests_page(p: Annotated[Page, Depends(page)]) -> Response:
    status = clean_query(p.request).get("status")
    if status is not None and status not in SHOWN:
        status = None
    with p.worker.sessions() as session:
        rows = store.retraining_requests(session, status=status, limit=200)
    settings = p.worker.settings
    report = latest_drift_report(settings.drift_dir)
    return p.render(
        "retraining.html",
        rows=rows,
        status=status,
        statuses=SHOWN,
        drift_report=report.name if report else None,
        evidently_url=settings.ui.evidently_url,
    )


@router.post(f"{PREFIX}/retraining/{{request_id}}", include_in_schema=False)
async def act(request_id: int, p: Annotated[Page, Depends(page)]) -> Response:
    form = await p.form()
    action, note = form.get("action"), form.get("note")
    with p.worker.sessions() as session:
        act_on_request(
            session,
            request_id,
            action=action if isinstance(action, str) else "",
            note=note if isinstance(note, str) and note.strip() else None,
        )
    return redirect(f"{PREFIX}/retraining")


@router.get(f"{PREFIX}/drift/latest", include_in_schema=False)
def drift_report(p: Annotated[Page, Depends(page)]) -> Response:
    report = latest_drift_report(p.worker.settings.drift_dir)
    if report is None:
        raise NotFound("no drift report yet: the drift job has not run", field="drift")
    # Evidently's report is a self-contained page with its own inline scripts.
    return FileResponse(report, media_type="text/html")
