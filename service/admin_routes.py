"""Admin routes: replace the guardrail policy, promote a candidate pack, run one in
shadow, read priors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from feedback import store
from service.admin_auth import require_admin
from service.deps import ERRORS, worker_of
from service.shadow_admin import ShadowAdmin

router = APIRouter()


class PolicyChanged(BaseModel):
    policy_version: str
    model_version: str
    stages: list[str]


class PromoteRequest(BaseModel):
    pack_dir: str = Field(description="Directory of the candidate pack on the server.")
    max_metric_drop: float | None = Field(
        None, ge=0, le=1, description="Override the gate's tolerated test-metric drop."
    )


@router.put(
    "/admin/policy",
    response_model=PolicyChanged,
    responses=ERRORS,
    dependencies=[Depends(require_admin)],
    tags=["admin"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/yaml": {"schema": {"type": "string"}}},
        }
    },
    summary="Replace the served guardrail policy (YAML body); a bad one is refused",
)
async def put_policy(request: Request) -> PolicyChanged:
    served = worker_of(request).served.replace_policy(
        (await request.body()).decode("utf-8", "replace")
    )
    model_version, policy_version = served.versions
    return PolicyChanged(
        policy_version=policy_version,
        model_version=model_version,
        stages=served.pipeline.stage_names(),
    )


@router.get(
    "/admin/policy",
    dependencies=[Depends(require_admin)],
    tags=["admin"],
    responses=ERRORS,
    summary="The served policy, as validated",
)
async def get_policy(request: Request) -> dict[str, Any]:
    return worker_of(request).served.current.policy.model_dump(mode="json")


@router.post(
    "/admin/promote",
    dependencies=[Depends(require_admin)],
    tags=["admin"],
    responses=ERRORS,
    summary="Run the regression gate on a candidate pack and serve it if it passes",
)
def promote(body: PromoteRequest, request: Request) -> dict[str, Any]:
    return worker_of(request).promoter.promote(
        body.pack_dir, max_metric_drop=body.max_metric_drop
    )


class ShadowRequest(BaseModel):
    pack_dir: str = Field(description="Directory of the candidate pack on the server.")
    sample_rate: float = Field(
        0.1, gt=0, le=1, description="Share of answered rows the candidate sees."
    )


@router.post(
    "/admin/shadow",
    dependencies=[Depends(require_admin)],
    tags=["admin"],
    responses=ERRORS,
    summary="Run a candidate pack beside the served one on sampled live traffic "
    "(replaces an active shadow run)",
)
def start_shadow(body: ShadowRequest, request: Request) -> dict[str, Any]:
    return ShadowAdmin(worker_of(request).shadow).begin(body.pack_dir, body.sample_rate)


@router.get(
    "/admin/shadow",
    dependencies=[Depends(require_admin)],
    tags=["admin"],
    responses=ERRORS,
    summary="The newest shadow run: rows, agreement, estimated accuracy, latency, "
    "largest disagreements (all workers)",
)
def read_shadow(request: Request) -> dict[str, Any]:
    return ShadowAdmin(worker_of(request).shadow).result()


@router.delete(
    "/admin/shadow",
    dependencies=[Depends(require_admin)],
    tags=["admin"],
    responses=ERRORS,
    summary="Stop the active shadow run in every worker; its final result",
)
def stop_shadow(request: Request) -> dict[str, Any]:
    return ShadowAdmin(worker_of(request).shadow).end()


@router.get("/priors", responses=ERRORS, summary="Current online prior estimate")
async def priors(request: Request) -> dict[str, Any]:
    return worker_of(request).dataplane.prior_estimate()


@router.get(
    "/admin/retraining-requests",
    dependencies=[Depends(require_admin)],
    tags=["admin"],
    responses=ERRORS,
    summary="Retraining requests opened by drift or the report rate",
)
def retraining_requests(
    request: Request, status: str | None = "open", limit: int = 50
) -> list[dict[str, Any]]:
    with worker_of(request).sessions() as session:
        rows = store.retraining_requests(session, status=status, limit=min(limit, 500))
        return [
            {
                "id": r.id,
                "created_at": r.created_at.isoformat(),
                "reason": r.reason,
                "details": r.details,
                "model_version": r.model_version,
                "status": r.status,
                "acknowledged_at": _iso(r.acknowledged_at),
                "closed_at": _iso(r.closed_at),
                "note": r.note,
            }
            for r in rows
        ]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
