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
from typing import TYPE_CHECKING

import typer

from common.cli import new_app, run, step
from feedback.shadow_rules import ShadowRules

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

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
        None,
        exists=True,
        dir_okay=False,
        help="Policy YAML (default: the one the candidate would be served with: "
        "the deployment's served policy in the store, else the candidate's own).",
    ),
    deployment: str = typer.Option(
        "default", help="Deployment whose served policy is the default."
    ),
    allow_empty: bool = typer.Option(
        False, help="Let a gate with 0 regression cases and no test rows pass."
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
    shadow: bool = typer.Option(
        True,
        help="Gate on the candidate's newest shadow run on this deployment, when "
        "it had one (found by the pack's model-store tag).",
    ),
    shadow_min_rows: int = typer.Option(
        ShadowRules.min_rows, min=1, help="Gate: rows the shadow run must have."
    ),
    shadow_accuracy_margin: float = typer.Option(
        ShadowRules.accuracy_margin,
        min=0.0,
        max=1.0,
        help="Gate: how far the candidate's estimated accuracy in shadow may fall "
        "below the served model's.",
    ),
    shadow_min_confident_agreement: float = typer.Option(
        ShadowRules.min_confident_agreement,
        min=0.0,
        max=1.0,
        help="Gate: least agreement in shadow on rows served with p >= 0.9.",
    ),
) -> None:
    """Run the regression suite and the promotion gate for a candidate pack.

    The store must exist at the code's schema revision (it is never created
    here: an empty one would replay nothing and pass)."""
    import tempfile

    from feedback.db import session_factory
    from feedback.promotion import PacksIncompatible, judge_candidate
    from feedback.shadow import result_for_pack
    from feedback.store_ready import StoreNotReady, open_migrated
    from packs.model_store import pack_tag

    try:
        engine = open_migrated(db)
    except StoreNotReady as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(2) from None
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            session_factory(engine)() as session,
        ):
            policy_path = policy or _served_policy(
                session, deployment, candidate, Path(tmp)
            )
            shadow_result = (
                result_for_pack(session, deployment, pack_tag(candidate))
                if shadow
                else None
            )
            rules = ShadowRules(
                min_rows=shadow_min_rows,
                accuracy_margin=shadow_accuracy_margin,
                min_confident_agreement=shadow_min_confident_agreement,
            )
            with step("replaying the gate"):
                judgement = judge_candidate(
                    session,
                    candidate_dir=candidate,
                    baseline_dir=baseline,
                    policy_path=policy_path,
                    test_table=test_table,
                    context_column=context_column,
                    max_newly_broken=max_newly_broken,
                    max_metric_drop=max_metric_drop,
                    out_dir=out,
                    allow_empty=allow_empty,
                    shadow=shadow_result,
                    shadow_rules=rules,
                )
    except PacksIncompatible as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    typer.echo(judgement.to_text())
    if not judgement.decision.passed:
        raise typer.Exit(1)


def _served_policy(
    session: Session, deployment: str, candidate: Path, tmp: Path
) -> Path:
    """The policy a promoted candidate would answer with: the deployment's served
    one (promotion keeps it), else, before anything was served, the candidate's
    own `policy.yaml`; exit 2 when there is neither."""
    from feedback.served_state import read_served
    from packs.format import POLICY_FILE

    record = read_served(session, deployment)
    if record is not None:
        path = tmp / "served-policy.yaml"
        path.write_text(record.policy_yaml, encoding="utf-8")
        typer.echo(
            f"policy: deployment {deployment}'s served policy ({record.policy_source})",
            err=True,
        )
        return path
    own = candidate / POLICY_FILE
    if own.is_file():
        typer.echo(f"policy: the candidate's own {own}", err=True)
        return own
    typer.echo(
        f"no policy to replay under: deployment {deployment!r} serves nothing in "
        f"this store and {own} does not exist; pass --policy",
        err=True,
    )
    raise typer.Exit(2)


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
