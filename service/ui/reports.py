"""The report queue and one report's triage page, and adding a category."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from starlette.responses import Response

from common.errors import Unprocessable
from feedback import categories, review, store
from feedback.models import REPORT_STATUSES
from feedback.schemas import ReportFilter, ReportUpdate
from service.ui.common import PREFIX, Page, PageRoute, clean_query, page, redirect

router = APIRouter(route_class=PageRoute)
FILTERS = ("status", "category", "predicted_label", "expected_label", "model_version")


def _day(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
    except ValueError:
        raise Unprocessable(
            f"{name} {value[:40]!r} is not a date: use YYYY-MM-DD", field=name
        ) from None


def report_filter(query: dict[str, str]) -> ReportFilter:
    """The queue's filters from the query string (dates are whole UTC days)."""
    after = _day("date_from", query.get("date_from"))
    until = _day("date_to", query.get("date_to"))
    return ReportFilter.model_validate(
        {
            **{k: query[k] for k in FILTERS if k in query},
            "created_after": after,
            "created_before": until + timedelta(days=1) if until else None,
        }
    )


def answer_text(output: dict[str, Any] | None) -> str:
    """What the user was told: the label, or that the service abstained and why."""
    output = output or {}
    if output.get("abstained") or output.get("label") is None:
        return f"abstained: {output.get('reason') or 'no reason recorded'}"
    return str(output["label"])


def trace_text(trace: Any) -> str:
    """The guardrail trace of a logged row, for people: the stages that acted.

    None means the row is not in the log any more (or was never logged); an
    empty trace means no stage acted."""
    if trace is None:
        return "not in the prediction log"
    entries = trace if isinstance(trace, list) else [trace]
    acted = [e for e in entries if not isinstance(e, dict) or e.get("acted", True)]
    if not acted:
        return "no stage acted"
    parts = []
    for entry in acted:
        if not isinstance(entry, dict):
            parts.append(str(entry))
            continue
        detail = ", ".join(
            f"{k}={v}" for k, v in entry.items() if k not in ("stage", "acted")
        )
        parts.append(
            f"{entry.get('stage', '?')}: {detail}"
            if detail
            else str(entry.get("stage"))
        )
    return "; ".join(parts)


@router.get(f"{PREFIX}/reports", include_in_schema=False)
def queue(p: Annotated[Page, Depends(page)]) -> Response:
    query = clean_query(p.request)
    flt = report_filter(query)
    rows_per_page = p.worker.settings.ui.page_rows
    raw_offset = query.get("offset", "")
    offset = min(int(raw_offset), store.MAX_OFFSET) if raw_offset.isdigit() else 0
    with p.worker.sessions() as session:
        rows = store.list_reports(
            session, filter=flt, limit=rows_per_page, offset=offset
        )
        total = store.count_reports(session, filter=flt)
        logged = {
            r.id: r
            for r in review.logged_rows(
                p.worker.dataplane.log_reader,
                ids=[x.prediction_id for x in rows if x.prediction_id],
            )
        }
        names = categories.category_names(session)
        items = [
            {
                "id": r.id,
                "created_at": r.created_at.strftime("%Y-%m-%d %H:%M"),
                "status": r.status,
                "inputs": r.inputs,
                "answer": answer_text(r.bad_output),
                "expected": r.label,
                "trace": trace_text(
                    logged[r.prediction_id].trace if r.prediction_id in logged else None
                ),
                "comment": r.comment,
                "categories": r.categories or [],
                "model_version": r.model_version,
            }
            for r in rows
        ]
    keep = {k: v for k, v in query.items() if k != "offset"}
    return p.render(
        "reports.html",
        items=items,
        total=total,
        query=query,
        statuses=REPORT_STATUSES,
        categories=names,
        labels=p.worker.served.current.meta.labels,
        next_page=(
            f"?{urlencode({**keep, 'offset': offset + rows_per_page})}"
            if offset + rows_per_page < total
            else None
        ),
        prev_page=(
            f"?{urlencode({**keep, 'offset': max(offset - rows_per_page, 0)})}"
            if offset
            else None
        ),
    )


@router.get(f"{PREFIX}/reports/{{report_id}}", include_in_schema=False)
def report_page(report_id: str, p: Annotated[Page, Depends(page)]) -> Response:
    with p.worker.sessions() as session:
        r = store.get_report(session, report_id)
        logged = review.logged_rows(
            p.worker.dataplane.log_reader,
            ids=[r.prediction_id] if r.prediction_id else [],
        )
        names = categories.category_names(session)
        return p.render(
            "report.html",
            r=r,
            answer=answer_text(r.bad_output),
            trace=trace_text(logged[0].trace if logged else None),
            statuses=REPORT_STATUSES,
            labels=p.worker.served.current.meta.labels,
            categories=sorted(set(names) | set(r.categories or [])),
            saved=p.request.query_params.get("saved") == "1",
        )


@router.post(f"{PREFIX}/reports/{{report_id}}", include_in_schema=False)
async def triage(report_id: str, p: Annotated[Page, Depends(page)]) -> Response:
    form = await p.form()
    chosen = [v for v in form.getlist("categories") if isinstance(v, str)]  # type: ignore[attr-defined]
    corrected = form.get("corrected_label") or None
    with p.worker.sessions() as session:
        allowed = set(categories.category_names(session))
        allowed |= set(store.get_report(session, report_id).categories or [])
        unknown = sorted(set(chosen) - allowed)
        if unknown:
            raise Unprocessable(
                f"categories {unknown} are not in the managed list: add them first",
                field="categories",
            )
        update = ReportUpdate(
            status=form.get("status") or None,  # type: ignore[arg-type]
            categories=chosen,
            corrected_label=corrected,  # type: ignore[arg-type]
        )
        store.update_report(
            session,
            report_id,
            update=update,
            labels=p.worker.served.current.meta.labels,
        )
    return redirect(f"{PREFIX}/reports/{report_id}?saved=1")


@router.post(f"{PREFIX}/categories", include_in_schema=False)
async def add_category(p: Annotated[Page, Depends(page)]) -> Response:
    form = await p.form()
    name = form.get("name")
    back = form.get("back")
    with p.worker.sessions() as session:
        categories.add_category(session, name=name if isinstance(name, str) else "")
    target = (
        back
        if isinstance(back, str) and back.startswith(f"{PREFIX}/")
        else f"{PREFIX}/reports"
    )
    return redirect(target)
