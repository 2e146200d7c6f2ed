"""The Evidently 0.7 local workspace: one project per pack, drift runs as snapshots.

Evidently's UI shows charts only for dashboard panels that exist, so the project's
tabs and panels are created here, programmatically and idempotently (a panel is
identified by its tab and title): an "All versions" tab, and one tab per model
version whose panels filter snapshots by the `model_version=<v>` tag that
`run_drift` puts on each snapshot. Panels read the metrics `run_drift` computes:
`DriftedColumnsCount` (share / count), `ValueDrift` per column, `UniqueValueCount`
of the predicted label. Each judged window also gets a small accuracy snapshot
(tag `accuracy`, see `record_accuracy`): the served accuracy estimated without
labels, the audit sample's measured accuracy and the pack's held-out accuracy, as
`MeanValue` metrics of one-row columns, drawn over time in one panel.

Evidently is imported lazily, inside these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoring.accuracy import ACCURACY_ESTIMATORS
from monitoring.drift import PREDICTION_COLUMN, DriftResult
from monitoring.evidently_import import import_evidently

if TYPE_CHECKING:
    from monitoring.accuracy_window import AccuracyReading

ALL_VERSIONS_TAB = "All versions"
ACCURACY_TAG = "accuracy"
ACCURACY_TITLE = "Accuracy over time: estimated without labels, audited, held-out"
#: Column of the accuracy snapshot -> legend of its line.
ACCURACY_SERIES = {
    **{
        f"estimated_accuracy_{name}": f"estimated, no labels ({name.upper()})"
        for name in ACCURACY_ESTIMATORS
    },
    "audit_accuracy": "measured on the audit sample",
    "heldout_accuracy": "held-out rows of the pack",
}


def version_tag(model_version: str) -> str:
    return f"model_version={model_version}"


def open_workspace(path: Path) -> Any:
    import_evidently()
    from evidently.ui.workspace import Workspace

    Path(path).mkdir(parents=True, exist_ok=True)
    return Workspace(str(path))


def open_project(workspace: Any, name: str) -> Any:
    """The project called `name`, created on first use."""
    found = workspace.search_project(name)
    if found:
        return found[0]
    project = workspace.create_project(name)
    project.description = f"Drift of live traffic against the reference of {name}"
    project.save()
    return project


def dashboard_panels(
    features: Sequence[str], labels: Sequence[str], tags: Sequence[str] = ()
) -> list[Any]:
    """The drift panels, optionally restricted to snapshots carrying `tags`."""
    import_evidently()
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import bar_plot_panel, counter_panel, line_plot_panel

    def metric(name: str, legend: str, **metric_labels: str) -> PanelMetric:
        return PanelMetric(
            metric=name, legend=legend, metric_labels=metric_labels, tags=list(tags)
        )

    share = metric(
        "DriftedColumnsCount", "share of drifted features", value_type="share"
    )
    return [
        counter_panel("Latest share of drifted features", [share], size="half"),
        counter_panel(
            "Latest drifted feature count",
            [metric("DriftedColumnsCount", "drifted features", value_type="count")],
            size="half",
        ),
        line_plot_panel("Share of drifted features over time", [share]),
        bar_plot_panel(
            "Drifted feature count",
            [metric("DriftedColumnsCount", "drifted features", value_type="count")],
        ),
        line_plot_panel(
            "Per-feature drift score",
            [metric("ValueDrift", f, column=f) for f in features],
            description="K-S p-value; a feature drifted when it is below the "
            "per-test threshold (family-wise alpha / number of tests)",
        ),
        line_plot_panel(
            "Prediction drift score (predicted label)",
            [metric("ValueDrift", "predicted label", column=PREDICTION_COLUMN)],
        ),
        bar_plot_panel(
            "Predicted-label share (live window)",
            [
                metric(
                    "UniqueValueCount",
                    label,
                    column=PREDICTION_COLUMN,
                    value_type="share",
                    label=label,
                )
                for label in labels
            ],
            stacked=True,
        ),
        line_plot_panel(
            ACCURACY_TITLE,
            [
                metric("MeanValue", legend, column=column)
                for column, legend in ACCURACY_SERIES.items()
            ],
            description="The estimate is read from the served (calibrated, "
            "prior-adjusted) probabilities of the latest window; the audit line is "
            "the accuracy on the uniform audit sample people answered, which "
            "checks the estimate.",
        ),
    ]


def ensure_dashboard(
    workspace: Any,
    project: Any,
    *,
    features: Sequence[str],
    labels: Sequence[str],
    model_version: str | None = None,
    first_run_hint: str | None = None,
) -> int:
    """Create missing panels (all-versions tab, and the version's tab); returns
    how many were added, 0 when the dashboard is already complete.

    The dashboard model is edited and saved whole rather than through
    `project.dashboard.add_panel`, which in Evidently 0.7 lists a panel twice when
    its tab already exists (every panel then renders twice). Tabs written that way
    are repaired here. `first_run_hint` adds a text panel saying when data will
    appear (a project with no run yet); without it that panel is removed."""
    from evidently.sdk.models import DashboardTabModel

    wanted = [(ALL_VERSIONS_TAB, p) for p in dashboard_panels(features, labels)]
    if model_version is not None:
        tab = f"Model {model_version}"
        tags = [version_tag(model_version)]
        wanted += [(tab, p) for p in dashboard_panels(features, labels, tags)]
    model = project.dashboard.model()
    changed = _drop_hint(model) if first_run_hint is None else False
    if first_run_hint is not None:
        wanted.insert(0, (ALL_VERSIONS_TAB, _hint_panel(first_run_hint)))
    for tab in model.tabs:
        unique = list(dict.fromkeys(tab.panels))
        if unique != tab.panels:
            tab.panels, changed = unique, True
    titles = {p.id: p.title for p in model.panels}
    present = {(t.title, titles.get(pid)) for t in model.tabs for pid in t.panels}
    tabs = {t.title: t for t in model.tabs}
    added = 0
    for title, panel in wanted:
        if (title, panel.title) in present:
            continue
        if title not in tabs:
            tabs[title] = DashboardTabModel(title=title, panels=[])
            model.tabs.append(tabs[title])
        model.panels.append(panel)
        tabs[title].panels.append(panel.id)
        added += 1
    if added or changed:
        workspace.save_dashboard(project.id, model)
    return added


HINT_TITLE = "No drift run yet"


def _hint_panel(text: str) -> Any:
    from evidently.sdk.panels import text_panel

    return text_panel(HINT_TITLE, text)


def _drop_hint(model: Any) -> bool:
    hints = {p.id for p in model.panels if p.title == HINT_TITLE}
    if not hints:
        return False
    model.panels = [p for p in model.panels if p.id not in hints]
    for tab in model.tabs:
        tab.panels = [pid for pid in tab.panels if pid not in hints]
    return True


def prepare_project(
    workspace_dir: Path,
    *,
    project_name: str,
    features: Sequence[str],
    labels: Sequence[str],
    hint: str,
) -> None:
    """Create the project and its panels before the first drift run, with a text
    panel saying when the first run will come (removed by that run), so the UI is
    not an empty list in the meantime. A project with runs is left as it is."""
    workspace = open_workspace(workspace_dir)
    project = open_project(workspace, project_name)
    if list(workspace.list_runs(project.id)):
        return
    ensure_dashboard(
        workspace, project, features=features, labels=labels, first_run_hint=hint
    )


def record_run(
    workspace_dir: Path,
    result: DriftResult,
    *,
    project_name: str,
    features: Sequence[str],
    labels: Sequence[str],
    keep: int | None = None,
) -> str:
    """Add `result`'s snapshot to the workspace (panels first); returns its id.
    With `keep`, the project's oldest snapshots beyond the newest `keep` are
    deleted (each is ~320 KB; one per drift run adds up)."""
    if result.snapshot is None:
        raise ValueError("a skipped drift result has no snapshot to record")
    return _add_snapshot(
        workspace_dir, result.snapshot, project_name=project_name,
        features=features, labels=labels, model_version=result.model_version,
        keep=keep,
    )  # fmt: skip


def _add_snapshot(
    workspace_dir: Path,
    snapshot: Any,
    *,
    project_name: str,
    features: Sequence[str],
    labels: Sequence[str],
    model_version: str | None,
    keep: int | None,
) -> str:
    """Add `snapshot` to the project (its panels first) and prune; returns its id."""
    workspace = open_workspace(workspace_dir)
    project = open_project(workspace, project_name)
    ensure_dashboard(
        workspace,
        project,
        features=features,
        labels=labels,
        model_version=model_version,
    )
    ref = workspace.add_run(project.id, snapshot, include_data=False)
    if keep is not None:
        prune_runs(workspace, project.id, keep=keep)
    return str(ref.id)


def prune_runs(workspace: Any, project_id: Any, *, keep: int) -> int:
    """Delete all but the newest `keep` snapshots of a project; returns how many.
    Evidently's snapshot ids are UUIDv7, so their text sorts by creation time."""
    runs = sorted(workspace.list_runs(project_id), key=str)
    old = runs[: max(0, len(runs) - keep)]
    for snapshot_id in old:
        workspace.delete_run(project_id, snapshot_id)
    return len(old)


def accuracy_values(reading: AccuracyReading) -> dict[str, float]:
    """The finite values of one accuracy reading, by snapshot column."""
    values = {
        f"estimated_accuracy_{name}": value for name, value in reading.estimates.items()
    }
    values["heldout_accuracy"] = reading.heldout_accuracy
    if reading.audit is not None:
        values["audit_accuracy"] = reading.audit.accuracy
    return {
        column: float(value)
        for column, value in values.items()
        if column in ACCURACY_SERIES and math.isfinite(value)
    }


def record_accuracy(
    workspace_dir: Path,
    reading: AccuracyReading,
    *,
    project_name: str,
    model_version: str,
    computed_at: datetime,
    features: Sequence[str],
    labels: Sequence[str],
    keep: int | None = None,
) -> str | None:
    """Add one accuracy snapshot (tags `accuracy` and the model version); returns
    its id, or None when the reading has no estimate (a window too small)."""
    values = accuracy_values(reading)
    if not any(c.startswith("estimated_accuracy_") for c in values):
        return None
    import_evidently()
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue

    frame = pd.DataFrame({column: [value] for column, value in values.items()})
    report = Report([MeanValue(column=column) for column in values])
    snapshot = report.run(
        Dataset.from_pandas(
            frame, data_definition=DataDefinition(numerical_columns=list(values))
        ),
        None,
        timestamp=computed_at,
        tags=[version_tag(model_version), ACCURACY_TAG],
        metadata={"rows": str(reading.rows)},
    )
    return _add_snapshot(
        workspace_dir, snapshot, project_name=project_name, features=features,
        labels=labels, model_version=model_version, keep=keep,
    )  # fmt: skip
