"""`haldir migrate`: apply and inspect schema migrations on the configured store."""

from __future__ import annotations

import typer
from rich.console import Console

from haldir.cli.operator import open_store, run
from haldir.cli.output import AsJson, print_json
from haldir.settings import Settings
from haldir.store import migrate as migrations

app = typer.Typer(help="Apply and inspect schema migrations.", no_args_is_help=True)
console = Console(highlight=False)


@app.command("up")
def up(as_json: AsJson = False) -> None:
    """Apply every pending migration."""
    settings = Settings()

    async def work() -> migrations.MigrationStatus:
        async with open_store(settings) as store:
            return await migrations.upgrade(store)

    result = run(work)
    if as_json:
        print_json(_json(result))
        return
    console.print(f"{result.backend} schema at {result.current} (latest)")


@app.command("status")
def status(as_json: AsJson = False) -> None:
    """Show the applied and the latest revision; exit 1 when migrations are pending."""
    settings = Settings()

    async def work() -> migrations.MigrationStatus:
        async with open_store(settings) as store:
            return await migrations.status(store)

    result = run(work)
    if as_json:
        print_json(_json(result))
        raise typer.Exit(0 if result.up_to_date else 1)
    state = "up to date" if result.up_to_date else "pending migrations: run 'haldir migrate up'"
    console.print(f"store: {result.backend}\ncurrent: {result.current or '-'}\nhead: {result.head}\n{state}")
    if not result.up_to_date:
        raise typer.Exit(1)


def _json(result: migrations.MigrationStatus) -> dict[str, object]:
    return {
        "backend": result.backend,
        "current": result.current,
        "head": result.head,
        "up_to_date": result.up_to_date,
    }
