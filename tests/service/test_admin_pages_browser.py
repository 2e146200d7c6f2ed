"""The admin pages in a real browser (headless Chromium) against a real service.

A triager logs in, filters the report queue, triages a report (adding a category
on the way); a reviewer answers an abstained row; the error analysis changes with
it; the data view draws. Each test saves a screenshot in the run's screenshot
folder (see tests/service/browser.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from feedback import categories
from feedback.db import make_engine, migrate, session_factory
from tests.servers import ADMIN_TOKEN, ServiceProcess, running
from tests.service.browser import require_chromium, screenshot_dir

pytestmark = pytest.mark.integration

# A real Adelie (row 72 of palmerpenguins) that the default model calls Chinstrap.
MISTAKEN_ADELIE = {
    "bill_length_mm": 45.8,
    "bill_depth_mm": 18.9,
    "flipper_length_mm": 197,
    "body_mass_g": 4150,
}
ADELIE = {
    "bill_length_mm": 39.1,
    "bill_depth_mm": 18.7,
    "flipper_length_mm": 181,
    "body_mass_g": 3750,
}
SEEDED_CATEGORIES = ("similar species", "measurement error")


def predict(c: httpx.Client, row: dict[str, float], **extra: Any) -> dict[str, Any]:
    r = c.post("/predict", json={"instances": [row], **extra})
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]  # type: ignore[no-any-return]


def report(c: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = c.post("/report", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def ui_service(
    tmp_path_factory: pytest.TempPathFactory, default_pack: Path
) -> Iterator[ServiceProcess]:
    """A service whose store starts with two managed categories; every answer
    goes to review, sampled every half second."""
    data_dir = tmp_path_factory.mktemp("ui-service")
    engine = make_engine(f"sqlite:///{data_dir / 'flywheel.db'}")
    migrate(engine)
    with session_factory(engine)() as session:
        for name in SEEDED_CATEGORIES:
            categories.add_category(session, name=name)
    engine.dispose()
    with running(
        data_dir,
        default_pack,
        FLYWHEEL_FEEDBACK__REVIEW_INTERVAL_S="0.5",
        FLYWHEEL_FEEDBACK__REVIEW_SAMPLE_SHARE="1",
        # Every answer's margin is below 1: every logged row reaches the queue.
        FLYWHEEL_FEEDBACK__REVIEW_MARGIN="1",
    ) as svc:
        with svc.client() as c:
            wrong = predict(c, MISTAKEN_ADELIE, context="Dream")
            assert wrong["label"] == "Chinstrap"
            report(
                c,
                {
                    "prediction_id": wrong["prediction_id"],
                    "expected_label": "Adelie",
                    "comment": "bill looks Adelie to me",
                },
            )
            right = predict(c, ADELIE)
            report(
                c,
                {
                    "prediction_id": right["prediction_id"],
                    "expected_label": "Gentoo",
                    "categories": ["similar species"],
                    "comment": "not sure",
                },
            )
        yield svc


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = require_chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_dir(tmp_path_factory)


@pytest.fixture
def page(browser: Browser, ui_service: ServiceProcess) -> Iterator[Page]:
    context = browser.new_context(
        base_url=ui_service.url, viewport={"width": 1400, "height": 900}
    )
    # Generous waits: the first error-analysis page imports scikit-learn in the
    # worker, which took over 30 s on the shared, loaded test machine.
    context.set_default_timeout(120_000)
    expect.set_options(timeout=60_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def log_in(page: Page, path: str = "/admin/ui/reports") -> None:
    page.goto(path)
    expect(page).to_have_url(re.compile(r"/admin/ui/login\?next="))
    page.fill("input[name=token]", ADMIN_TOKEN)
    page.click("form button[type=submit]")
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))


def test_triager_logs_in_filters_the_queue_and_confirms_a_report(
    page: Page, ui_service: ServiceProcess, shots: Path
) -> None:
    log_in(page)
    rows = page.locator("#reports tbody tr[data-report]")
    expect(rows).to_have_count(2)
    page.select_option("select[name=predicted_label]", "Chinstrap")
    page.click("#filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"predicted_label=Chinstrap"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("bill looks Adelie to me")
    expect(rows.first).to_contain_text("priors")  # the guardrail trace
    report_id = rows.first.get_attribute("data-report")
    rows.first.locator("a").first.click()
    expect(page.locator("#status")).to_have_text("new")

    page.fill("#add-category input[name=name]", "Bill Shape")
    page.click("#add-category button[type=submit]")
    expect(page.locator("#triage")).to_contain_text("bill shape")
    page.select_option("#triage select[name=status]", "confirmed")
    page.select_option("#triage select[name=corrected_label]", "Adelie")
    page.check("#triage input[value='bill shape']")
    page.check("#triage input[value='similar species']")
    page.click("#triage button[type=submit]")
    expect(page.locator(".saved")).to_be_visible()
    expect(page.locator("#status")).to_have_text("confirmed")
    expect(page.locator("#case")).to_have_text(re.compile(r"^\d+$"))
    page.screenshot(path=shots / "report-triage.png", full_page=True)

    with ui_service.client(headers=ui_service.admin_headers()) as c:
        stored = c.get(f"/admin/reports/{report_id}").json()
    assert stored["categories"] == ["bill shape", "similar species"]
    assert stored["corrected_label"] == "Adelie"
    assert stored["regression_case_id"] is not None

    page.goto("/admin/ui/reports?category=bill+shape")
    expect(rows).to_have_count(1)
    page.screenshot(path=shots / "report-queue.png", full_page=True)


def test_managed_categories_are_counted_by_name(ui_service: ServiceProcess) -> None:
    with ui_service.client() as c:
        metrics = c.get("/metrics").text
    line = next(
        (
            x
            for x in metrics.splitlines()
            if x.startswith("flywheel_report_categories_total")
            and 'category="similar species"' in x
        ),
        None,
    )
    assert line is not None and float(line.rsplit(" ", 1)[1]) >= 1, metrics[-2000:]


# A Gentoo with a body mass no other test row has, to find it in the queue.
REVIEWED_GENTOO = {
    "bill_length_mm": 47.5,
    "bill_depth_mm": 15.0,
    "flipper_length_mm": 218,
    "body_mass_g": 5123,
}


def percent(page: Page, category: str) -> str:
    cell = page.locator(f"#percentages td[data-category='{category}']")
    return cell.inner_text()


def test_reviewer_answers_a_queued_row_and_it_becomes_a_regression_case(
    page: Page, ui_service: ServiceProcess, shots: Path
) -> None:
    with ui_service.client() as c:
        said = predict(c, REVIEWED_GENTOO)["label"]
    log_in(page, "/admin/ui/review")
    row = page.locator("#review tbody tr[data-item]", has_text="5123.0")
    for _ in range(60):  # the sampler runs every half second
        if row.count():
            break
        page.wait_for_timeout(500)
        page.reload()
    expect(row).to_have_count(1)
    expect(row).to_contain_text("low_margin")
    page.screenshot(path=shots / "review-queue.png", full_page=True)
    row.locator("a").click()
    answer = "Chinstrap" if said != "Chinstrap" else "Adelie"
    page.check(f"#answer-form input[name=answer][value='{answer}']")
    page.check("#answer-form input[value='measurement error']")
    page.click("#answer-form button[value=answer]")
    expect(page).to_have_url(re.compile(r"/admin/ui/review\?answered="))
    expect(page.locator("#review tbody tr", has_text="5123.0")).to_have_count(0)

    with ui_service.client(headers=ui_service.admin_headers()) as c:
        reports = c.get("/admin/reports", params={"category": "measurement error"})
    (filed,) = [r for r in reports.json() if r["inputs"]["body_mass_g"] == 5123]
    assert filed["status"] == "confirmed" and filed["corrected_label"] == answer
    assert filed["regression_case_id"] is not None


def test_error_analysis_percentages_follow_triage(
    page: Page, ui_service: ServiceProcess, shots: Path
) -> None:
    log_in(page, "/admin/ui/analysis")
    before = percent(page, "measurement error")
    errors_before = page.locator("#category-shares tbody tr").count()
    with ui_service.client() as c:
        wrong = predict(c, MISTAKEN_ADELIE, context="Dream")
        filed = report(
            c,
            {
                "prediction_id": wrong["prediction_id"],
                "expected_label": "Adelie",
                "categories": ["measurement error"],
            },
        )
    page.reload()
    after = percent(page, "measurement error")
    assert after != before, (before, after)
    assert float(after.rstrip("%")) > float(before.rstrip("%"))
    expect(page.locator("#category-shares tbody tr")).to_have_count(errors_before + 1)
    expect(page.locator("#errors tr[data-set='train-dev']")).to_contain_text("%")
    expect(page.locator(f"#category-shares a[href$='{filed['id']}']")).to_have_count(1)
    page.screenshot(path=shots / "error-analysis.png", full_page=True)


def test_data_view_draws_reference_live_and_reported_points(
    page: Page, ui_service: ServiceProcess, shots: Path
) -> None:
    log_in(page, "/admin/ui/data")
    svg = page.locator("svg#projection")
    expect(svg).to_be_visible()
    assert page.locator("svg#projection circle").count() > 100
    assert page.locator("svg#projection a.report-point").count() >= 2
    for _ in range(60):  # the first view starts loading cleanlab in the background
        if not page.locator("#finder-loading").count():
            break
        page.wait_for_timeout(2000)
        page.reload()
    expect(page.locator("#label-issues")).to_be_visible()
    page.screenshot(path=shots / "data-view.png", full_page=True)
    # The last drawn is on top: reports of the same input share one spot.
    page.locator("svg#projection a.report-point").last.click()
    expect(page).to_have_url(re.compile(r"/admin/ui/reports/[0-9a-f]{32}$"))


def test_operator_starts_reads_and_stops_a_shadow_run_on_its_page(
    page: Page,
    ui_service: ServiceProcess,
    shots: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from packs.build_default import build_default_pack

    candidate = tmp_path_factory.mktemp("shadow-candidate") / "wider"
    build_default_pack(candidate, hidden=(32,))
    log_in(page, "/admin/ui/shadow")
    page.fill("#start input[name=pack_dir]", str(candidate))
    page.fill("#start input[name=sample_rate]", "2")
    page.click("#start button[type=submit]")
    expect(page.locator("main")).to_contain_text(
        "sample rate must be a number in (0, 1]"
    )
    page.goto("/admin/ui/shadow")
    page.fill("#start input[name=pack_dir]", str(candidate))
    page.fill("#start input[name=sample_rate]", "1")
    page.click("#start button[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/ui/shadow$"))
    expect(page.locator("#run-status")).to_have_text("active")
    with ui_service.client() as c:
        for row in (ADELIE, MISTAKEN_ADELIE, REVIEWED_GENTOO):
            predict(c, row)
    for _ in range(60):  # rows reach the tally from the shadow thread
        page.reload()
        if page.locator("#rows").inner_text().split()[0] == "3":
            break
        page.wait_for_timeout(500)
    expect(page.locator("#rows")).to_contain_text("3 ")
    expect(page.locator("#agreement")).to_contain_text("%")
    # Three rows are far below the gate's minimum: the page says it would refuse.
    expect(page.locator("#gate-verdict")).to_have_text("refuses")
    expect(page.locator("#gate")).to_contain_text("has 3 row(s)")
    expect(page.locator("#gate")).to_contain_text("not judged")
    expect(page.locator("#per-label tbody tr")).not_to_have_count(0)
    page.screenshot(path=shots / "shadow-run.png", full_page=True)
    page.click("#stop button[type=submit]")
    expect(page.locator("#run-status")).to_have_text("stopped")
    expect(page.locator("#stop")).to_have_count(0)
    with ui_service.client(headers=ui_service.admin_headers()) as c:
        stored = c.get("/admin/shadow").json()
    assert stored["status"] == "stopped" and stored["rows_seen"] == 3
