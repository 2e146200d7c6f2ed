"""The project's command line: `python -m service.cli --help`.

serve        build the default pack if missing, then `bentoml serve` on 127.0.0.1
build-pack   build the default penguin pack (deterministic, offline)
store-pack   copy a pack into BentoML's model store (what `make bento` carries)
pack         bring your own ONNX classifier: write a pack from it and its data
retrain      retrain on corrected reports, run the gate, optionally promote
demo         the whole flywheel against a real service
feedback     the store: migrate, regress (the gate), purge (= feedback.cli)
monitoring   drift runs, Prometheus, Evidently's UI (= monitoring.cli)
guardrails   offline evaluation of the guardrail pipeline (= guardrails.cli)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from pydantic import ValidationError

from common.cli import new_app, run, step
from feedback.cli import app as feedback_app
from guardrails.cli import app as guardrails_app
from monitoring.cli import app as monitoring_app
from service.settings import PROJECT_ROOT, Settings

app = new_app(__doc__)
app.add_typer(feedback_app, name="feedback")
app.add_typer(monitoring_app, name="monitoring")
app.add_typer(guardrails_app, name="guardrails")


def tool_env(settings: Settings) -> dict[str, str]:
    """Environment for BentoML and friends: all state under the data dir."""
    data = settings.data_dir
    return {
        "BENTOML_HOME": str(data / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "ORT_DISABLE_TELEMETRY": "1",
        "MPLCONFIGDIR": str(data / "matplotlib"),
    }


def ensure_pack(settings: Settings) -> None:
    """Build the default pack at the default location if it is missing. A pack
    named by FLYWHEEL_PACK_DIR or a model-store tag is never built."""
    from packs.build_default import ensure_default_pack

    if settings.pack_dir is None and settings.deployment.pack_tag is None:
        ensure_default_pack(
            settings.active_pack_dir, echo=lambda line: typer.echo(line, err=True)
        )


def _refuse(message: str) -> typer.Exit:
    typer.echo(f"cannot start: {message}", err=True)
    return typer.Exit(2)


def load_settings() -> Settings:
    """Settings from the environment, or exit 2 naming each problem (never a value)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise _refuse(f"invalid settings: {problems}") from None


def preflight(settings: Settings) -> None:
    """Load what the workers will serve once, before BentoML starts them.

    BentoML restarts a worker that fails in its __init__ forever; checking here
    turns a broken pack or policy, or a database that cannot be reached, is
    corrupt or is at another schema revision, into one message and exit code 2.
    It also copies the configured pack into the model store and records what the
    deployment serves, as the workers would.
    """
    from common.errors import ServiceError
    from feedback.db import make_engine, session_factory
    from feedback.store_ready import StoreNotReady, check_store
    from packs.model_store import PackStore
    from service.served import ServedState

    try:
        # Reachable, intact, at the code's revision (migrated when allowed).
        check_store(settings.database_url, migrate=settings.feedback.migrate_on_start)
    except StoreNotReady as exc:
        raise _refuse(exc.message) from None
    engine = make_engine(settings.database_url)
    try:
        store = PackStore.at(settings.model_store_dir)
        ServedState(settings, sessions=session_factory(engine), store=store)
    except ServiceError as exc:
        raise _refuse(exc.message) from None
    finally:
        engine.dispose()


@app.command()
def serve(
    port: int = typer.Option(3000, help="Port on 127.0.0.1."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
) -> None:
    """Serve the active model pack with `bentoml serve`."""
    settings = load_settings()
    ensure_pack(settings)
    preflight(settings)
    env = os.environ | tool_env(settings)
    for path in ("BENTOML_HOME", "MPLCONFIGDIR"):
        Path(env[path]).mkdir(parents=True, exist_ok=True)
    bentoml = str(Path(sys.executable).parent / "bentoml")
    args = [
        bentoml,
        "serve",
        "service.service:InferenceService",
        "--host",
        host,
        "--port",
        str(port),
    ]
    os.chdir(PROJECT_ROOT)
    os.execve(bentoml, args, env)


@app.command("build-pack")
def build_pack(
    out: Path = typer.Option(None, help="Pack directory (default: the active pack)."),
) -> None:
    """Build the default penguin pack from the palmerpenguins data."""
    from packs.build_default import build_default_pack

    meta = build_default_pack(out or Settings().active_pack_dir)
    typer.echo(meta.model_dump_json(indent=2))


@app.command("store-pack")
def store_pack(
    pack_dir: Path = typer.Argument(
        None, help="Pack directory (default: the default pack, built if missing)."
    ),
) -> None:
    """Copy a pack into BentoML's model store (under the data dir) and print its
    tag; `make bento` runs it so that the bento carries the pack."""
    from common.errors import ServiceError
    from packs.model_store import PackStore

    settings = load_settings()
    if pack_dir is None:
        ensure_pack(settings)
    try:
        stored = PackStore.at(settings.model_store_dir).add(
            pack_dir or settings.active_pack_dir
        )
    except ServiceError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(2) from None
    typer.echo(stored.tag)


@app.command(context_settings={"max_content_width": 120})
def pack(
    # Required, but checked below so that a missing one is a one-line error.
    model: Path = typer.Argument(None, help="ONNX classifier file, as exported."),
    data: Path = typer.Argument(
        None, help="CSV or Parquet training sample with a label column."
    ),
    out: Path = typer.Option(None, help="Pack directory to write (required)."),
    name: str = typer.Option(None, help="Pack name (required)."),
    labels: str = typer.Option(
        None,
        help="Comma-separated label-column values in output column order "
        "(default: the model's own class list, else the sorted values).",
    ),
    label_column: str = typer.Option("label", help="Column holding the true label."),
    features: str = typer.Option(
        None, help="Comma-separated feature columns (default: all but the label)."
    ),
    input_name: str = typer.Option(None, help="ONNX input (default: the only one)."),
    output_name: str = typer.Option(
        None, help="ONNX probability output (default: detected; ZipMap unwrapped)."
    ),
    logits: bool = typer.Option(
        False, "--logits", help="The output holds logits: apply a softmax."
    ),
    validation: Path = typer.Option(
        None, help="Validation rows file (with --test; default: split the sample)."
    ),
    test: Path = typer.Option(
        None, help="Held-out test rows file (with --validation)."
    ),
    seed: int = typer.Option(0, help="Seed of the stratified split."),
) -> None:
    """Pack an ONNX classifier as exported (skl2onnx defaults, a probability
    tensor, or logits), with a generic policy for its labels."""
    import time

    from packs.byo import pack_onnx
    from packs.errors import PackerInputInvalid

    started = time.perf_counter()

    def progress(line: str) -> None:
        typer.echo(f"[{time.perf_counter() - started:5.1f} s] {line}", err=True)

    def split(text: str | None) -> list[str] | None:
        return None if text is None else [s.strip() for s in text.split(",")]

    try:
        given = {"MODEL": model, "DATA": data, "--out": out, "--name": name}
        missing = [what for what, value in given.items() if value is None]
        if missing:
            raise PackerInputInvalid(f"missing {', '.join(missing)}; see --help")
        for path in (model, data, validation, test):
            if path is not None and not path.is_file():
                raise PackerInputInvalid(f"no such file: {path}")
        meta = pack_onnx(
            model,
            data,
            out,
            labels=split(labels),
            name=name,
            label_column=label_column,
            features=split(features),
            input_name=input_name,
            output_name=output_name,
            logits=logits,
            validation_path=validation,
            test_path=test,
            seed=seed,
            echo=progress,
        )
    except PackerInputInvalid as exc:
        typer.echo(f"cannot pack: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(meta.model_dump_json(indent=2))
    m = meta.metrics
    progress(
        f"wrote {meta.name} {meta.version} to {out}: test accuracy "
        f"{m['test_accuracy']:.3f} (majority {m['test_majority_rate']:.3f}) on "
        f"{int(m['test_rows'])} rows; serve it with FLYWHEEL_PACK_DIR={out}"
    )
    from packs.writer import reference_size_warning

    window = load_settings().monitoring.drift_window_rows
    warning = meta.reference and reference_size_warning(
        meta.reference.distinct_rows, window
    )
    if warning:
        typer.echo(f"warning: {warning}", err=True)


@app.command()
def retrain(
    out: Path = typer.Option(
        None, help="Candidate pack directory (default: data/packs/candidate-<time>)."
    ),
    promote: bool = typer.Option(False, help="Serve the candidate if the gate passes."),
) -> None:
    """Retrain on the training data plus corrected reports, then run the gate.

    Exits 1 when the gate refuses the candidate. With --promote a passing candidate
    (its copy in the model store) becomes what the deployment serves; its running
    workers follow within seconds.
    """
    import time

    from feedback.db import make_engine, migrate, session_factory
    from feedback.promotion import judge_candidate, record_promotion
    from feedback.retrain import retrain_default_pack
    from feedback.shadow import result_for_pack
    from packs.model_store import PackStore
    from service.served import ServedState
    from service.wiring import shadow_rules

    settings = load_settings()
    ensure_pack(settings)
    out = (
        out
        or settings.data_dir / "packs" / f"candidate-{time.strftime('%Y%m%dT%H%M%S')}"
    )
    engine = make_engine(settings.database_url)
    migrate(engine)
    try:
        sessions = session_factory(engine)
        store = PackStore.at(settings.model_store_dir)
        served = ServedState(settings, sessions=sessions, store=store)
        with sessions() as session:
            with step("retraining on the training data and corrected reports"):
                meta, used = retrain_default_pack(session, out)
            stored = store.add(out)
            typer.echo(
                f"candidate {meta.version} from {used} corrected report(s): {out} "
                f"(model store: {stored.tag})"
            )
            with step("replaying the regression cases and the test set (the gate)"):
                judgement = judge_candidate(
                    session,
                    candidate_dir=stored.path,
                    baseline_dir=served.pack_dir,
                    policy_path=served.policy_path,
                    max_newly_broken=settings.feedback.gate_max_newly_broken,
                    max_metric_drop=settings.feedback.gate_max_metric_drop,
                    out_dir=settings.regression_dir,
                    shadow=result_for_pack(
                        session, settings.deployment.name, stored.tag
                    ),
                    shadow_rules=shadow_rules(settings),
                )
            typer.echo(judgement.to_text())
            if not judgement.decision.passed:
                raise typer.Exit(1)
            if promote:
                served.serve_pack(stored)
                assert judgement.report.run_id is not None
                record_promotion(session, meta, run_id=judgement.report.run_id)
                typer.echo(
                    f"promoted {meta.version}; running workers follow within seconds"
                )
    finally:
        engine.dispose()


@app.command()
def demo(
    port: int = typer.Option(0, help="Port on 127.0.0.1 (0: a free one)."),
    ui_port: int = typer.Option(8000, help="Evidently UI port the summary names."),
    keep_running: bool = typer.Option(False, help="Leave the service up at the end."),
) -> None:
    """The whole flywheel on the default pack: drift -> retraining request ->
    report -> retrain -> gate -> promote, against a real service in data/demo."""
    from service.demo import run_demo

    run_demo(
        load_settings(),
        port=port or None,
        ui_port=ui_port,
        keep_running=keep_running,
        echo=typer.echo,
    )


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
