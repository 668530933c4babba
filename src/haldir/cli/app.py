"""The Typer application and the one place CLI errors become exit codes."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from haldir.cli import keys, migrate, serve
from haldir.errors import HaldirError

app = typer.Typer(
    name="haldir",
    help="Haldir: governance for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("serve")(serve.serve)
app.add_typer(migrate.app, name="migrate")
app.add_typer(keys.app, name="keys")

_state = {"verbose": False}


@app.callback()
def _options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["verbose"] = verbose


def main() -> None:
    try:
        app(standalone_mode=False)
    except HaldirError as exc:
        if _state["verbose"]:
            Console(stderr=True).print_exception()
        Console(stderr=True).print(f"[bold red]error:[/] {exc.message}", highlight=False)
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # the click usage errors and the unexpected
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if _state["verbose"]:
            raise
        Console(stderr=True).print(
            f"[bold red]error:[/] {type(exc).__name__}: {exc} (run with --verbose for details)"
        )
        sys.exit(1)
