"""Bad-result reports (`POST /report`) and their triage (`/admin/reports`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from feedback import store
from feedback.idempotency import ADMIN_SCOPE, client_scope
from feedback.schemas import ReportCreate, ReportFilter, ReportPublic, ReportUpdate
from service.admin_auth import require_admin
from service.deps import ERRORS, worker_of

router = APIRouter()
admin = APIRouter(
    prefix="/admin", dependencies=[Depends(require_admin)], tags=["admin"]
)


def _client_key(request: Request) -> str:
    """Who a report counts against: the peer address, never a request header.

    An Authorization or X-Forwarded-For value is chosen by the client (there is at
    most one API key, so it tells no clients apart): keying on it would let a
    client take a fresh bucket with every request.
    """
    return request.client.host if request.client else "unknown"


@router.post(
    "/report",
    response_model=ReportPublic,
    status_code=201,
    responses={
        200: {"model": ReportPublic, "description": "Replayed (same key)"},
        **ERRORS,
    },
    summary="Report a bad result, by prediction id or with the input and output",
)
def report(
    data: ReportCreate,
    request: Request,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(max_length=200, description="Retry-safe submission key")
    ] = None,
) -> ReportPublic:
    worker = worker_of(request)
    authorization = request.headers.get("authorization")
    worker.access.check_client(authorization)
    admin = worker.access.is_admin(authorization)
    client = _client_key(request)
    public, created = worker.dataplane.report(
        data,
        idempotency_key=idempotency_key,
        client=client,
        scope=ADMIN_SCOPE if admin else client_scope(client),
    )
    if not created:
        response.status_code = 200
    # Anyone may report: only the admin sees what the store attached.
    return public if admin else public.echo_of(data)


@admin.get("/reports", response_model=list[ReportPublic], responses=ERRORS)
def list_reports(
    request: Request,
    filter: Annotated[ReportFilter, Query()],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=store.MAX_OFFSET)] = 0,
) -> list[ReportPublic]:
    with worker_of(request).sessions() as session:
        rows = store.list_reports(session, filter=filter, limit=limit, offset=offset)
        return [ReportPublic.from_row(r) for r in rows]


@admin.get("/reports/{report_id}", response_model=ReportPublic, responses=ERRORS)
def get_report(report_id: str, request: Request) -> ReportPublic:
    with worker_of(request).sessions() as session:
        return ReportPublic.from_row(store.get_report(session, report_id))


@admin.patch("/reports/{report_id}", response_model=ReportPublic, responses=ERRORS)
def triage_report(
    report_id: str, update: ReportUpdate, request: Request
) -> ReportPublic:
    worker = worker_of(request)
    with worker.sessions() as session:
        row = store.update_report(
            session,
            report_id,
            update=update,
            labels=worker.served.current.meta.labels,
        )
        return ReportPublic.from_row(row)


@admin.get("/predictions/{prediction_id}", responses=ERRORS)
def get_prediction(prediction_id: str, request: Request) -> dict[str, object]:
    """A logged prediction with its stored input (if the policy allowed storing it).

    `trace` is the guardrail trace when a stage acted on the row, else null."""
    row = store.get_prediction(worker_of(request).dataplane.log_reader, prediction_id)
    return {
        "id": row.id,
        "created_at": row.created_at.isoformat(),
        "model_version": row.model_version,
        "policy_version": row.policy_version,
        "context": row.context,
        "inputs": row.inputs,
        "outputs": row.outputs,
        "trace": row.trace,
    }
