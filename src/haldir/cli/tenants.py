"""`haldir tenants`: show tenants' quotas and set them, directly on the configured store."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from haldir.cli.operator import open_governor, run
from haldir.cli.output import AsJson
from haldir.core.clock import isoformat
from haldir.core.keys import Principal
from haldir.core.quotas import Quota, QuotaUsage
from haldir.errors import InvalidRequest
from haldir.settings import Settings

app = typer.Typer(
    help="Tenants' quotas: actions a month, agents, requests a second (operator commands, no server needed).",
    no_args_is_help=True,
)
console = Console(highlight=False)

TenantArg = Annotated[str, typer.Argument(help="The tenant id; created on first use.")]


def _limit(name: str, what: str) -> Any:
    return typer.Option(f"--{name}", help=f"{what}; 0 or 'none' removes the limit; left out: unchanged.")


@app.command("set-quota")
def set_quota(
    tenant: TenantArg,
    actions_per_month: Annotated[
        str | None, _limit("actions-per-month", "Ledger entries a UTC month (new actions refused beyond)")
    ] = None,
    agents: Annotated[str | None, _limit("agents", "Distinct agents with sessions in force")] = None,
    requests_per_second: Annotated[
        str | None, _limit("requests-per-second", "API requests a second, over all the tenant's keys")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Set some of a tenant's limits; every server process enforces them from its next request."""
    changes: dict[str, int | None] = {}
    for field, text in (
        ("actions_per_month", actions_per_month),
        ("agents", agents),
        ("requests_per_second", requests_per_second),
    ):
        if text is not None:
            changes[field] = _number(text, field=field)
    if not changes:
        raise InvalidRequest("give at least one of --actions-per-month, --agents, --requests-per-second")
    settings = Settings()

    async def work() -> QuotaUsage:
        async with open_governor(settings) as gov:
            who = Principal.operator(tenant)
            await gov.limits.set_quota(who, **changes)
            return await gov.limits.quota_usage(who)

    _show(tenant, run(work), as_json=as_json)


@app.command("show")
def show(tenant: TenantArg, as_json: AsJson = False) -> None:
    """A tenant's quota and what it used of it."""
    settings = Settings()

    async def work() -> QuotaUsage:
        async with open_governor(settings) as gov:
            return await gov.limits.quota_usage(Principal.operator(tenant))

    _show(tenant, run(work), as_json=as_json)


@app.command("list")
def list_tenants(as_json: AsJson = False) -> None:
    """Every tenant with a quota."""
    settings = Settings()

    async def work() -> list[tuple[str, Quota, Any]]:
        async with open_governor(settings) as gov:
            return await gov.limits.list_quotas()

    found = run(work)
    if as_json:
        print(json.dumps([{"tenant_id": t, **_quota(q), "updated_at": isoformat(at)} for t, q, at in found]))
        return
    table = Table("tenant", "actions / month", "agents", "requests / s", "set")
    for tenant_id, quota, at in found:
        table.add_row(
            tenant_id,
            _text(quota.actions_per_month),
            _text(quota.agents),
            _text(quota.requests_per_second),
            isoformat(at),
        )
    console.print(table)


def _number(text: str, *, field: str) -> int | None:
    if text.strip().lower() in ("none", "0"):
        return None
    try:
        return int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise InvalidRequest(
            f"{field} must be a whole number, 0 or 'none', got {text!r}", field=field
        ) from None


def _quota(quota: Quota) -> dict[str, int | None]:
    return {
        "actions_per_month": quota.actions_per_month,
        "agents": quota.agents,
        "requests_per_second": quota.requests_per_second,
    }


def _text(value: int | None) -> str:
    return "unlimited" if value is None else f"{value:,}"


def _show(tenant: str, found: QuotaUsage, *, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "tenant_id": tenant,
                    **_quota(found.quota),
                    "actions_this_month": found.actions_this_month,
                    "agents_active": found.agents_active,
                }
            )
        )
        return
    quota = found.quota
    console.print(f"tenant '{tenant}'")
    console.print(f"  actions this month  {found.actions_this_month:,} / {_text(quota.actions_per_month)}")
    console.print(f"  agents              {found.agents_active:,} / {_text(quota.agents)}")
    console.print(f"  requests / second   {_text(quota.requests_per_second)}")
