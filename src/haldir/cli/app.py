"""The Typer application and the one place CLI errors become messages and exit codes."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer._click.core import Context  # Typer vendors click; its Group.invoke is typed with this Context

from haldir.cli import (
    approvals,
    audit,
    backup,
    compliance,
    health,
    keys,
    login,
    mcp_server,
    migrate,
    overview,
    proxy,
    serve,
    tenants,
    vault,
    webhooks,
)
from haldir.cli.output import JSON_MODE
from haldir.errors import HaldirError


class _HaldirGroup(typer.core.TyperGroup):
    """Turns a `HaldirError` into one line on stderr (red text, or a JSON object when the command was
    asked for --json) and its exit code; tracebacks only with --verbose."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except HaldirError as exc:
            stderr = Console(stderr=True, highlight=False, soft_wrap=True)
            if ctx.meta.get("haldir.verbose"):
                stderr.print_exception()
            if ctx.meta.get(JSON_MODE):
                error = {"error": exc.message, "code": exc.code, "exit_code": exc.exit_code}
                sys.stderr.write(json.dumps(error, ensure_ascii=False) + "\n")
            else:
                stderr.print(f"[bold red]error:[/] {escape(exc.message)}")
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="haldir",
    cls=_HaldirGroup,
    help="Haldir: governance for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("serve")(serve.serve)
app.command("proxy")(proxy.proxy)
app.command("mcp")(mcp_server.mcp)
app.command("login")(login.login)
app.command("logout")(login.logout)
app.command("overview")(overview.overview)
app.command("status")(health.status)
app.command("ready")(health.ready)
app.command("backup")(backup.backup)
app.command("restore")(backup.restore)
app.add_typer(migrate.app, name="migrate")
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(vault.app, name="vault")
app.add_typer(approvals.app, name="approvals")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(compliance.app, name="compliance")
app.add_typer(tenants.app, name="tenants")


@app.callback()
def _options(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks on errors.")] = False,
) -> None:
    ctx.meta["haldir.verbose"] = verbose


def main() -> None:
    app()
