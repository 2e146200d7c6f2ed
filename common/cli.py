"""What every command line of the project shares (`service.cli`, `feedback.cli`,
`monitoring.cli`, `guardrails.cli`):

- help at least `HELP_WIDTH` columns wide, so option names are never cut
  (`--min-window-ro…`) in an 80-column terminal or a pipe;
- misuse (unknown option, bad value, missing argument) as one line on stderr and
  exit status 2, instead of a framed usage box;
- libraries' INFO chatter (Alembic's migration lines) kept off the terminal;
- `step`, a progress line on stderr before and after anything that takes seconds.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

# Typer vendors its own copy of click; its exceptions are the ones raised here.
from typer._click import exceptions as click_errors

HELP_WIDTH = 120
USAGE_EXIT = 2
QUIET_LOGGERS = ("alembic", "httpx")


def new_app(help: str | None) -> typer.Typer:
    """A Typer app with this project's help width and no shell-completion options."""
    return typer.Typer(
        no_args_is_help=True,
        add_completion=False,
        help=help,
        context_settings={"max_content_width": HELP_WIDTH},
        pretty_exceptions_enable=False,
    )


def run(app: typer.Typer, *, level: int = logging.INFO) -> None:
    """Run `app` as a program: wide help, one-line misuse errors, quiet libraries."""
    import typer.rich_utils

    columns = shutil.get_terminal_size((HELP_WIDTH, 24)).columns
    typer.rich_utils.MAX_WIDTH = max(HELP_WIDTH, columns)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    command = typer.main.get_command(app)
    try:
        code = command.main(standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:
        typer.echo(exc.format_message(), err=True)
        code = USAGE_EXIT
    except click_errors.UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx else ""
        typer.echo(f"{where}{exc.format_message()} (see --help)", err=True)
        code = USAGE_EXIT
    except click_errors.ClickException as exc:
        typer.echo(f"error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


@contextmanager
def step(what: str) -> Iterator[None]:
    """`what ...` on stderr now and `what: done in N s` after it."""
    started = time.monotonic()
    typer.echo(f"{what} ...", err=True)
    yield
    typer.echo(f"{what}: done in {time.monotonic() - started:.1f} s", err=True)


def fail(message: str, code: int = USAGE_EXIT) -> Any:
    """One line on stderr and the exit status (for user mistakes found late)."""
    typer.echo(message, err=True)
    return typer.Exit(code)
