"""The review queue: abstained, low-margin and audit rows wait for a person's answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from common.errors import Unprocessable
from feedback import categories, review
from feedback.models import REVIEW_REASONS, REVIEW_STATUSES
from service.ui.common import PREFIX, Page, PageRoute, clean_query, page, redirect
from service.ui.reports import answer_text, trace_text

router = APIRouter(route_class=PageRoute)


def _choice(query: dict[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    value = query.get(name)
    if value is not None and value not in allowed:
        raise Unprocessable(
            f"{name} {value[:40]!r} is not one of {', '.join(allowed)}", field=name
        )
    return value


@router.get(f"{PREFIX}/review", include_in_schema=False)
def queue(p: Annotated[Page, Depends(page)]) -> Response:
    query = clean_query(p.request)
    status = _choice(query, "status", REVIEW_STATUSES) or "pending"
    reason = _choice(query, "reason", REVIEW_REASONS)
    with p.worker.sessions() as session:
        items = review.list_review_items(
            session, status=status, reason=reason, limit=p.worker.settings.ui.page_rows
        )
        pending = review.count_review_items(session)
        rows = [
            {
                "id": i.id,
                "logged_at": i.logged_at.strftime("%Y-%m-%d %H:%M:%S"),
                "reason": i.reason,
                "margin": i.margin,
                "inputs": i.inputs,
                "answer": answer_text(i.outputs),
                "context": i.context,
                "status": i.status,
                "given": i.answer,
            }
            for i in items
        ]
    return p.render(
        "review.html",
        rows=rows,
        pending=pending,
        status=status,
        reason=reason,
        statuses=REVIEW_STATUSES,
        reasons=REVIEW_REASONS,
    )


@router.get(f"{PREFIX}/review/{{item_id}}", include_in_schema=False)
def item_page(item_id: int, p: Annotated[Page, Depends(page)]) -> Response:
    with p.worker.sessions() as session:
        item = review.get_review_item(session, item_id)
        return p.render(
            "review_item.html",
            item=item,
            answer=answer_text(item.outputs),
            trace=trace_text(item.trace),
            probabilities=sorted(
                ((item.outputs or {}).get("probabilities") or {}).items(),
                key=lambda kv: -kv[1],
            ),
            labels=p.worker.served.current.meta.labels,
            categories=categories.category_names(session),
        )


@router.post(f"{PREFIX}/review/{{item_id}}", include_in_schema=False)
async def answer(item_id: int, p: Annotated[Page, Depends(page)]) -> Response:
    form = await p.form()
    action = form.get("action")
    with p.worker.sessions() as session:
        if action == "skip":
            review.skip_review_item(session, item_id)
            return redirect(f"{PREFIX}/review")
        label = form.get("answer")
        if not isinstance(label, str) or not label:
            raise Unprocessable("choose the right label as the answer", field="answer")
        chosen = [v for v in form.getlist("categories") if isinstance(v, str)]  # type: ignore[attr-defined]
        unknown = sorted(set(chosen) - set(categories.category_names(session)))
        if unknown:
            raise Unprocessable(
                f"categories {unknown} are not in the managed list", field="categories"
            )
        review.answer_review_item(
            session,
            item_id,
            answer=label,
            labels=p.worker.served.current.meta.labels,
            categories=chosen,
        )
    return redirect(f"{PREFIX}/review?answered={item_id}")
