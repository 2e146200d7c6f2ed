"""The data view: a 2-D projection of reference, live and reported inputs, and the
probable label errors cleanlab finds, each one click from the review queue."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends
from sqlalchemy import select
from starlette.responses import Response

from common.errors import NotFound
from feedback import data_view, review
from feedback.label_errors import Candidate, find_label_errors, finder_ready
from feedback.models import Report, ReviewItem, utcnow
from packs.format import LABEL_COLUMN
from service.ui.common import PREFIX, Page, PageRoute, page, redirect
from service.ui.plots import colours, scatter_svg

router = APIRouter(route_class=PageRoute)
REFERENCE_POINTS = 1000
LIVE_POINTS = 1000
LIVE_WINDOW = timedelta(hours=24)
REPORT_POINTS = 500


def _reference(p: Page) -> pd.DataFrame:
    pack = p.worker.served.current.pack
    frame = pd.read_parquet(pack.reference_path())
    return frame.reset_index(drop=True)


def _labelled_reports(session: Any) -> tuple[list[Report], dict[str, int]]:
    reports = list(
        session.scalars(
            select(Report)
            .where(Report.inputs.is_not(None), Report.status != "rejected")
            .order_by(Report.created_at.desc())
            .limit(REPORT_POINTS)
        )
    )
    items = dict(
        session.execute(
            select(ReviewItem.report_id, ReviewItem.id).where(
                ReviewItem.report_id.is_not(None)
            )
        ).all()
    )
    return reports, items


@router.get(f"{PREFIX}/data", include_in_schema=False)
def data_page(p: Annotated[Page, Depends(page)]) -> Response:
    served = p.worker.served.current
    names, labels = served.meta.feature_names, served.meta.labels
    reference = _reference(p)
    live = review.logged_rows(
        p.worker.dataplane.log_reader, since=utcnow() - LIVE_WINDOW, limit=LIVE_POINTS
    )
    with p.worker.sessions() as session:
        reports, review_of = _labelled_reports(session)
    shown = reference.head(REFERENCE_POINTS)
    live_x, live_keep = data_view.rows_matrix([r.inputs for r in live], names)
    rep_x, rep_keep = data_view.rows_matrix([r.inputs for r in reports], names)
    chosen = [reports[i] for i in rep_keep]
    projection = data_view.project(
        reference=shown[names].to_numpy(dtype=float),
        reference_labels=shown[LABEL_COLUMN].astype(str).tolist(),
        groups=[
            (
                "live",
                live_x,
                [live[i].label for i in live_keep],
                [None] * len(live_keep),
            ),
            (
                "report",
                rep_x,
                [r.label or r.bad_label for r in chosen],
                [f"{PREFIX}/reports/{r.id}" for r in chosen],
            ),
        ],
    )
    candidates = [
        Candidate(
            "training", str(i), str(row[LABEL_COLUMN]), [float(row[n]) for n in names]
        )
        for i, row in reference.iterrows()
    ]
    candidates += [
        Candidate(
            "review" if r.id in review_of else "report",
            str(review_of.get(r.id, r.id)),
            r.label,
            [float(r.inputs[n]) for n in names],  # type: ignore[index]
        )
        for r in chosen
        if r.label and r.status in ("confirmed", "fixed")
    ]
    finder_loading = not finder_ready()
    issues = (
        []
        if finder_loading
        else find_label_errors(
            candidates, labels=labels, predict_proba=served.pack.predict_proba
        )
    )
    return p.render(
        "data.html",
        svg=scatter_svg(projection.points, labels=labels),
        explained=projection.explained,
        palette=colours(labels),
        counts={
            "reference": len(shown),
            "live": len(live_keep),
            "report": len(chosen),
        },
        issues=issues,
        candidates=len(candidates),
        finder_loading=finder_loading,
    )


@router.post(f"{PREFIX}/data/training/{{row}}", include_in_schema=False)
async def send_to_review(row: int, p: Annotated[Page, Depends(page)]) -> Response:
    """Queue a flagged training row for a person's answer."""
    await p.form()
    served = p.worker.served.current
    reference = _reference(p)
    if not 0 <= row < len(reference):
        raise NotFound(
            f"the reference data has no row {row} (it has {len(reference)})",
            field="row",
        )
    values = reference.iloc[row]
    column = served.meta.context_column
    with p.worker.sessions() as session:
        item = review.queue_label_check(
            session,
            ref=f"training:{served.meta.version}:{row}",
            inputs={n: float(values[n]) for n in served.meta.feature_names},
            label=str(values[LABEL_COLUMN]),
            model_version=served.meta.version,
            context=str(values[column]) if column and column in values else None,
        )
        item_id = item.id
    return redirect(f"{PREFIX}/review/{item_id}")
