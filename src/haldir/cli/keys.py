"""`haldir keys`: create, list and revoke API keys directly on the configured store."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from haldir.cli.operator import open_governor, run
from haldir.cli.output import AsJson
from haldir.core.clock import isoformat
from haldir.core.keys import ApiKey, Principal
from haldir.errors import NotFound
from haldir.governor import DEFAULT_TENANT, CreatedKey
from haldir.settings import Settings

app = typer.Typer(
    help="Create, list and revoke API keys (operator commands, no server needed).", no_args_is_help=True
)
console = Console(highlight=False)

Tenant = Annotated[str, typer.Option("--tenant", "-t", help="Tenant id; created on first use.")]


@app.command("create")
def create(
    tenant: Tenant = DEFAULT_TENANT,
    name: Annotated[str, typer.Option("--name", "-n", help="A label for the key.")] = "operator",
    scopes: Annotated[
        list[str] | None,
        typer.Option("--scopes", "-s", help="Key scopes, repeated or comma-separated (default '*')."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Create a key and print it once."""
    wanted = [part.strip() for item in scopes or ["*"] for part in item.split(",") if part.strip()]
    settings = Settings()

    async def work() -> CreatedKey:
        async with open_governor(settings) as gov:
            outcome = await gov.keys.create_key(Principal.operator(tenant), name=name, scopes=wanted)
            return outcome.value

    created = run(work)
    key = created.key
    if as_json:
        print(
            json.dumps(
                {
                    "key": created.value,
                    "prefix": key.prefix,
                    "tenant_id": key.tenant_id,
                    "name": key.name,
                    "scopes": sorted(key.scopes),
                }
            )
        )
        return
    console.print(f"API key for tenant '{key.tenant_id}' (shown once, store it now):\n\n  {created.value}\n")
    console.print(f"prefix {key.prefix}, scopes {', '.join(sorted(key.scopes))}")


@app.command("list")
def list_keys(tenant: Tenant = DEFAULT_TENANT, as_json: AsJson = False) -> None:
    """List a tenant's keys (never their values)."""
    settings = Settings()

    async def work() -> list[ApiKey]:
        async with open_governor(settings) as gov:
            return await gov.keys.list_keys(Principal.operator(tenant))

    found = run(work)
    if as_json:
        print(json.dumps([_key_json(key) for key in found]))
        return
    table = Table("prefix", "name", "scopes", "created", "revoked")
    for key in found:
        revoked = "" if key.revoked_at is None else isoformat(key.revoked_at)
        table.add_row(key.prefix, key.name, ", ".join(sorted(key.scopes)), isoformat(key.created_at), revoked)
    console.print(table)


@app.command("revoke")
def revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix, e.g. hld_Ab3dEf9h.")],
    as_json: AsJson = False,
) -> None:
    """Revoke a key at once, in whichever tenant it lives."""
    settings = Settings()

    async def work() -> ApiKey:
        async with open_governor(settings) as gov:
            tenant = await gov.keys.key_tenant(prefix)
            if tenant is None:
                raise NotFound(f"no API key {prefix!r}")
            return await gov.keys.revoke_key(Principal.operator(tenant), prefix)

    key = run(work)
    if as_json:
        print(json.dumps(_key_json(key)))
        return
    console.print(f"revoked {key.prefix} (tenant '{key.tenant_id}')")


def _key_json(key: ApiKey) -> dict[str, object]:
    return {
        "prefix": key.prefix,
        "tenant_id": key.tenant_id,
        "name": key.name,
        "scopes": sorted(key.scopes),
        "created_at": isoformat(key.created_at),
        "revoked_at": None if key.revoked_at is None else isoformat(key.revoked_at),
    }
