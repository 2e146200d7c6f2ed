"""The project's command line: `python -m service.cli --help`.

    serve        build the default pack if missing, then `bentoml serve` on 127.0.0.1
    build-pack   build the default penguin pack (deterministic, offline)
    pack         bring your own ONNX classifier: write a pack from it and its data
Other packages add their commands as sub-apps (guardrails, feedback, monitoring).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

from service.settings import PROJECT_ROOT, Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def tool_env(settings: Settings) -> dict[str, str]:
    """Environment for BentoML and friends: all state under the data dir."""
    data = settings.data_dir
    return {
        "BENTOML_HOME": str(data / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "ORT_DISABLE_TELEMETRY": "1",
        "MPLCONFIGDIR": str(data / "matplotlib"),
    }


def ensure_pack(settings: Settings) -> Path:
    from packs.build_default import build_default_pack
    from packs.format import METADATA_FILE

    pack_dir = settings.active_pack_dir
    if not (pack_dir / METADATA_FILE).is_file():
        typer.echo(f"building the default model pack into {pack_dir} ...", err=True)
        meta = build_default_pack(pack_dir)
        typer.echo(f"built {meta.name} {meta.version}: {meta.metrics}", err=True)
    return pack_dir


@app.command()
def serve(
    port: int = typer.Option(3000, help="Port on 127.0.0.1."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
) -> None:
    """Serve the active model pack with `bentoml serve`."""
    settings = Settings()
    ensure_pack(settings)
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


@app.command()
def pack(
    model: Path = typer.Argument(..., exists=True, help="ONNX classifier file."),
    data: Path = typer.Argument(
        ..., exists=True, help="CSV or Parquet sample with a label column."
    ),
    out: Path = typer.Option(..., help="Pack directory to write."),
    labels: str = typer.Option(
        ..., help="Comma-separated labels in output column order."
    ),
    name: str = typer.Option(..., help="Pack name."),
    label_column: str = typer.Option("label", help="Column holding the true label."),
    input_name: str = typer.Option(None, help="ONNX input (default: the only one)."),
    output_name: str = typer.Option(
        None, help="ONNX probability output (default: detected)."
    ),
) -> None:
    """Pack any ONNX classifier that outputs class probabilities."""
    from packs.byo import pack_onnx

    meta = pack_onnx(
        model,
        data,
        out,
        labels=[s.strip() for s in labels.split(",")],
        name=name,
        label_column=label_column,
        input_name=input_name,
        output_name=output_name,
    )
    typer.echo(meta.model_dump_json(indent=2))


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    app()


if __name__ == "__main__":
    main()
