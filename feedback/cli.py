"""Feedback commands: `python -m feedback.cli --help` (also a sub-app of service.cli).

migrate   apply the store's Alembic migrations to a database
regress   replay regression cases + the test table through a candidate and the
          baseline pack, print the report, store the run, apply the gate
          (exit code 1 when the gate refuses the candidate: usable in CI)
purge     delete logged predictions older than N days (retention)
analysis  error analysis of a pack's version: reported errors by category,
          confirmed cases, the latest regression run, bias / variance / mismatch
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from common.cli import new_app, run, step

app = new_app(__doc__)

DB_OPTION = typer.Option(..., "--db", help="SQLAlchemy URL, e.g. sqlite:///data/f.db")


@app.command()
def migrate(db: str = DB_OPTION) -> None:
    """Upgrade the database schema to the newest revision."""
    from feedback.db import current_revision, make_engine
    from feedback.db import migrate as run_migrations

    engine = make_engine(db)
    try:
        run_migrations(engine)
        typer.echo(f"schema at revision {current_revision(engine)}")
    finally:
        engine.dispose()


@app.command()
def regress(
    db: str = DB_OPTION,
    candidate: Path = typer.Option(..., exists=True, file_okay=False, help="Pack dir."),
    baseline: Path = typer.Option(..., exists=True, file_okay=False, help="Pack dir."),
    policy: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="Policy YAML (default: its defaults)."
    ),
    out: Path | None = typer.Option(None, help="Directory for the confusion PNG."),
    test_table: Path | None = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="Parquet test table (default: the baseline pack's test set).",
    ),
    context_column: str | None = typer.Option(
        None, help="Test-table column holding each row's deployment context."
    ),
    max_newly_broken: int = typer.Option(
        0, min=0, help="Gate: cases allowed to break."
    ),
    max_metric_drop: float = typer.Option(
        0.01, min=0.0, help="Gate: allowed absolute drop of accuracy / macro-F1."
    ),
) -> None:
    """Run the regression suite and the promotion gate for a candidate pack."""
    from feedback.db import make_engine, session_factory
    from feedback.db import migrate as run_migrations
    from feedback.promotion import PacksIncompatible, judge_candidate

    engine = make_engine(db)
    try:
        run_migrations(engine)
        with session_factory(engine)() as session, step("replaying the gate"):
            judgement = judge_candidate(
                session,
                candidate_dir=candidate,
                baseline_dir=baseline,
                policy_path=policy,
                test_table=test_table,
                context_column=context_column,
                max_newly_broken=max_newly_broken,
                max_metric_drop=max_metric_drop,
                out_dir=out,
            )
    except PacksIncompatible as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    typer.echo(judgement.to_text())
    if not judgement.decision.passed:
        raise typer.Exit(1)


@app.command()
def purge(
    log_dir: Path = typer.Option(..., help="Prediction-log directory."),
    days: float = typer.Option(..., min=0.0, help="Keep predictions this recent."),
) -> None:
    """Delete logged predictions older than `--days` (the policy's retention),
    a whole segment at a time."""
    from feedback import store
    from feedback.log_reader import PredictionLogReader

    deleted = store.purge_predictions_older_than(PredictionLogReader(log_dir), days)
    typer.echo(f"deleted {deleted} logged predictions older than {days:g} days")


@app.command()
def analysis(
    db: str = DB_OPTION,
    pack: Path = typer.Option(..., exists=True, file_okay=False, help="Pack dir."),
    policy: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="Policy YAML (default: its defaults)."
    ),
    model_version: str | None = typer.Option(
        None, help="Reports and runs of this version (default: the pack's)."
    ),
) -> None:
    """Print the error analysis the admin pages show, from the same functions."""
    from feedback import analysis as errors
    from feedback.categories import category_names
    from feedback.db import make_engine, session_factory
    from feedback.db import migrate as run_migrations
    from feedback.replay import pack_predictor

    predictor = pack_predictor(pack, policy)
    meta = predictor.pack.metadata
    version = model_version or meta.version
    engine = make_engine(db)
    try:
        run_migrations(engine)
        with session_factory(engine)() as session:
            reports = errors.reported_errors(session, model_version=version)
            text = errors.to_text(
                model_version=version,
                shares=errors.category_shares(reports, category_names(session)),
                confusion=errors.confirmed_confusion(reports, meta.labels),
                run=errors.latest_run(session, model_version=version),
                table=errors.error_table(
                    session, predictor=predictor, pack_dir=pack, meta=meta
                ),
            )
    finally:
        engine.dispose()
    typer.echo(text)


def main() -> None:
    run(app, level=logging.WARNING)


if __name__ == "__main__":
    main()
