"""The shadow run on one page: the newest run's numbers, what the promotion gate
would say of them, and forms to start a run of a pack or stop the active one
(the same calls as `/admin/shadow`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from common.errors import Unprocessable
from feedback.gate import shadow_check
from service.shadow_admin import ShadowAdmin
from service.ui.common import PREFIX, Page, PageRoute, page, redirect

router = APIRouter(route_class=PageRoute)


@router.get(f"{PREFIX}/shadow", include_in_schema=False)
def shadow_page(p: Annotated[Page, Depends(page)]) -> Response:
    found = ShadowAdmin(p.worker.shadow).latest()
    gate = (
        None if found is None else shadow_check(found, p.worker.promoter.shadow_rules)
    )
    return p.render(
        "shadow.html",
        run=None if found is None else found.to_dict(),
        gate=None if gate is None else {"section": gate[0], "reasons": gate[1]},
        rules=p.worker.promoter.shadow_rules,
    )


@router.post(f"{PREFIX}/shadow", include_in_schema=False)
async def act(p: Annotated[Page, Depends(page)]) -> Response:
    form = await p.form()
    admin = ShadowAdmin(p.worker.shadow)
    action = form.get("action")
    if action == "stop":
        admin.end()
    elif action == "start":
        pack_dir = form.get("pack_dir")
        if not isinstance(pack_dir, str) or not pack_dir.strip():
            raise Unprocessable("give the candidate's pack directory", field="pack_dir")
        admin.begin(pack_dir.strip(), _sample_rate(form.get("sample_rate")))
    else:
        raise Unprocessable("action must be start or stop", field="action")
    return redirect(f"{PREFIX}/shadow")


def _sample_rate(value: object) -> float:
    try:
        rate = float(value) if isinstance(value, str) and value.strip() else 0.1
    except ValueError:
        rate = -1.0
    if not 0 < rate <= 1:
        raise Unprocessable(
            f"sample rate must be a number in (0, 1], not {value!r}",
            field="sample_rate",
        )
    return rate
