"""Command line for the offline guardrail tools.

    python -m guardrails.cli evaluate --pack data/packs/penguins \
        --policy policies/default.yaml
    python -m guardrails.cli bench --pack data/packs/penguins \
        --policy policies/default.yaml
    python -m guardrails.cli coverage --splits 200
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from common.cli import fail, new_app, run
from common.errors import ServiceError
from guardrails.policy import Policy

app = new_app("Evaluate and benchmark the guardrail pipeline offline.")

PACK = typer.Option(Path("data/packs/penguins"), help="Model pack directory.")
POLICY = typer.Option(Path("policies/default.yaml"), help="Guardrail policy file.")


@contextmanager
def _user_errors(command: str) -> Iterator[None]:
    """A missing or broken pack or policy as one line and exit 2."""
    try:
        yield
    except ServiceError as exc:
        raise fail(f"{command}: {exc.message}") from None


@app.command()
def evaluate(
    pack: Path = PACK,
    policy: Path = POLICY,
    rows: int = typer.Option(1000, help="Rows per resampled deployment."),
    repeats: int = typer.Option(10, help="Resampled deployments per mix."),
    seed: int = typer.Option(0, help="Seed of the first resample."),
    out: Path | None = typer.Option(None, help="Also write the table here."),
) -> None:
    """Accuracy, log-loss and ECE per island with and without each calibration
    step (temperature, context priors, EM priors)."""
    from guardrails.evaluation import evaluate as evaluate_pack

    with _user_errors("evaluate"):
        table = evaluate_pack(
            pack, Policy.load(policy), resampled_rows=rows, repeats=repeats, seed=seed
        )
    text = table.to_markdown()
    typer.echo(text)
    if out is not None:
        out.write_text(text, encoding="utf-8")


@app.command()
def bench(
    pack: Path = PACK,
    policy: Path = POLICY,
    min_time_s: float = typer.Option(1.0, help="Measuring time per case."),
    provider: str = typer.Option("CPUExecutionProvider", help="onnxruntime provider."),
) -> None:
    """Guardrail cost per row next to raw ONNX inference, batch 1 and 1000."""
    from guardrails.bench import bench as bench_pack
    from guardrails.bench import to_markdown

    with _user_errors("bench"):
        used, timings = bench_pack(
            pack, Policy.load(policy), min_time_s=min_time_s, provider=provider
        )
    typer.echo(to_markdown(used, timings))


@app.command()
def coverage(
    datasets: str = typer.Option(
        "penguins,iris,wine,digits,breast_cancer", help="Comma-separated datasets."
    ),
    splits: int = typer.Option(200, min=1, help="Calibration/test splits each."),
    seed: int = typer.Option(0, help="Seed of the splits and the shifts."),
    out: Path | None = typer.Option(None, help="Also write the table here."),
) -> None:
    """Coverage and set size of the conformal sets, with and without label
    shift, next to naive cumulative-probability sets."""
    from guardrails.coverage import evaluate as coverage_of
    from guardrails.coverage import to_markdown
    from guardrails.heldout_data import DATASETS

    names = [d.strip() for d in datasets.split(",") if d.strip()]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise fail(f"coverage: unknown {unknown}; datasets: {list(DATASETS)}")
    text = to_markdown(coverage_of(names, splits=splits, seed=seed))
    typer.echo(text)
    if out is not None:
        out.write_text(text, encoding="utf-8")


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
