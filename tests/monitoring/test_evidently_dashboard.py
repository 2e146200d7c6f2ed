"""The Evidently project as a new user first sees it: every panel once, in one
tab, and a hint saying when data will come until the first drift run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monitoring.evidently_workspace import (
    ALL_VERSIONS_TAB,
    HINT_TITLE,
    dashboard_panels,
    ensure_dashboard,
    open_project,
    open_workspace,
    prepare_project,
)

FEATURES = ["x0", "x1"]
LABELS = ["a", "b"]


def _tabs(workspace: Any, name: str) -> dict[str, list[str]]:
    model = open_project(workspace, name).dashboard.model()
    titles = {p.id: p.title for p in model.panels}
    in_tabs = [pid for t in model.tabs for pid in t.panels]
    # Every panel sits in exactly one tab, once.
    assert sorted(map(str, in_tabs)) == sorted(str(p.id) for p in model.panels)
    return {t.title: [titles[pid] for pid in t.panels] for t in model.tabs}


def test_a_project_without_runs_shows_its_panels_and_when_data_comes(
    tmp_path: Path,
) -> None:
    prepare_project(
        tmp_path, project_name="p", features=FEATURES, labels=LABELS, hint="soon"
    )
    prepare_project(  # idempotent: a second start adds nothing
        tmp_path, project_name="p", features=FEATURES, labels=LABELS, hint="soon"
    )
    tabs = _tabs(open_workspace(tmp_path), "p")
    assert list(tabs) == [ALL_VERSIONS_TAB]
    panels = tabs[ALL_VERSIONS_TAB]
    assert panels[0] == HINT_TITLE
    assert (
        len(panels) == len(set(panels)) == 1 + len(dashboard_panels(FEATURES, LABELS))
    )


def test_the_first_run_replaces_the_hint_with_the_version_tab(tmp_path: Path) -> None:
    prepare_project(
        tmp_path, project_name="p", features=FEATURES, labels=LABELS, hint="soon"
    )
    workspace = open_workspace(tmp_path)
    project = open_project(workspace, "p")
    ensure_dashboard(
        workspace, project, features=FEATURES, labels=LABELS, model_version="v1"
    )
    tabs = _tabs(workspace, "p")
    assert HINT_TITLE not in tabs[ALL_VERSIONS_TAB]
    assert len(tabs["Model v1"]) == len(set(tabs["Model v1"])) > 0


def test_panels_listed_twice_by_evidently_add_panel_are_repaired(
    tmp_path: Path,
) -> None:
    workspace = open_workspace(tmp_path)
    project = open_project(workspace, "p")
    first, second = dashboard_panels(FEATURES, LABELS)[:2]
    # Evidently 0.7's add_panel appends the id twice when the tab exists.
    project.dashboard.add_panel(first, tab=ALL_VERSIONS_TAB)
    project.dashboard.add_panel(second, tab=ALL_VERSIONS_TAB)
    model = project.dashboard.model()
    assert [t.panels.count(second.id) for t in model.tabs] == [2]
    ensure_dashboard(workspace, project, features=FEATURES, labels=LABELS)
    tabs = _tabs(workspace, "p")
    assert len(tabs[ALL_VERSIONS_TAB]) == len(set(tabs[ALL_VERSIONS_TAB]))
