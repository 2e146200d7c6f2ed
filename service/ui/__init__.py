"""The admin pages under `/admin/ui/`: server-rendered Jinja templates, one local
stylesheet, no JavaScript build step. `mount(app)` adds them to the FastAPI app.

    auth        log in with the admin token (signed session cookie), log out
    reports     the report queue, one report's triage page, adding a category
    review      the review queue and answering one item
    analysis    error analysis of a model version
    data        2-D projection of the data, probable label errors (cleanlab)
    retraining  retraining requests (acknowledge / close with a note), the
                latest drift report, links to the Evidently UI and /metrics
    shadow      the newest shadow run and the gate's verdict on it; start / stop
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from service.ui import analysis, auth, data, reports, retraining, review, shadow
from service.ui.common import PREFIX

STATIC_DIR = Path(__file__).parent / "static"


def mount(app: FastAPI) -> None:
    for module in (auth, reports, review, analysis, data, retraining, shadow):
        app.include_router(module.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
