"""The error-analysis page for one model version (the served one by default)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import select
from starlette.responses import Response

from feedback import analysis, categories
from feedback.models import ModelVersion
from feedback.replay import PackPredictor
from guardrails.build import build_pipeline
from service.ui.common import PREFIX, Page, PageRoute, clean_query, page

router = APIRouter(route_class=PageRoute)


@router.get(f"{PREFIX}/analysis", include_in_schema=False)
def analysis_page(p: Annotated[Page, Depends(page)]) -> Response:
    served = p.worker.served.current
    served_version = served.meta.version
    version = clean_query(p.request).get("model_version", served_version)
    with p.worker.sessions() as session:
        versions = list(
            session.scalars(select(ModelVersion.version).order_by(ModelVersion.id))
        )
        reports = analysis.reported_errors(session, model_version=version)
        shares = analysis.category_shares(reports, categories.category_names(session))
        confusion = analysis.confirmed_confusion(reports, served.meta.labels)
        run = analysis.latest_run(session, model_version=version)
        table = None
        if version == served_version:
            # Replay mode, as the regression gate runs it.
            predictor = PackPredictor(
                served.pack, build_pipeline(served.pack, served.policy, "replay")
            )
            table = analysis.error_table(
                session,
                predictor=predictor,
                pack_dir=served.pack.path,
                meta=served.meta,
            )
    return p.render(
        "analysis.html",
        version=version,
        served_version=served_version,
        versions=sorted({*versions, served_version}),
        shares=shares,
        confusion=confusion,
        run=run,
        table=table,
        gaps=analysis.gaps(table) if table else None,
    )
