"""`haldir overview`: the tenant panel, once or as a live view that redraws in place until Ctrl-C."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from haldir.cli.output import AsJson, console, print_json
from haldir.cli.remote import connect

BAR = 20


def overview(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Redraw in place until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", "-i", min=0.2, help="Seconds between redraws with --watch.")
    ] = 2.0,
    as_json: AsJson = False,
) -> None:
    """The tenant's actions, spend, sessions, Vault, audit trail, webhooks and approvals (`GET /v1/metrics`).

    With --json and --watch, one JSON object per line at each refresh.
    """
    with connect(needs="audit:read") as client:
        if not watch:
            _show(client.metrics(), as_json=as_json)
            return
        try:
            if as_json:
                while True:
                    print_json(client.metrics())
                    time.sleep(interval)
            with Live(panel(client.metrics()), console=console, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(panel(client.metrics()), refresh=True)
        except KeyboardInterrupt:
            return


def _show(metrics: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print_json(metrics)
    else:
        console.print(panel(metrics))


def panel(m: dict[str, Any]) -> Group:
    """The panel the product description prints, from `GET /v1/metrics`."""
    ok = m["status"] == "ok"
    lines = Table.grid(padding=(0, 2))
    lines.add_column(style="bold")
    lines.add_column()
    status = (
        Text("● ok", style="green") if ok else Text(f"● {m['status']}: {'; '.join(m['problems'])}", "red")
    )
    lines.add_row("Status", status)
    lines.add_row("Actions", _actions(m["actions_this_month"], m["actions_quota"]))
    lines.add_row("Spend", f"$ {Decimal(m['spend_this_month_usd']):,.2f} this month")
    lines.add_row("Sessions", f"{m['sessions_active']:>8,} active  ·  {_agents(m)}")
    lines.add_row(
        "Vault", f"{m['secrets']:>8,} secrets  ·  {m['secret_accesses_this_month']:,} accesses this month"
    )
    lines.add_row("Audit", _audit(m))
    lines.add_row("Webhooks", _webhooks(m))
    lines.add_row("Approvals", f"{m['approvals_pending']:>8,} pending")
    title = Text("Haldir tenant overview", style="bold")
    subtitle = Text(f"{m['tenant_id']}  ·  {m['at']}", style="dim")
    return Group(title, subtitle, Text(""), lines)


def _actions(used: int, quota: int | None) -> str:
    if quota is None:
        return f"{used:>8,} this month"
    share = used / quota if quota else 1.0
    filled = min(BAR, round(share * BAR))
    return f"{used:>8,} / {quota:,}   {'█' * filled}{'░' * (BAR - filled)}   {share:6.1%}"


def _agents(m: dict[str, Any]) -> str:
    quota = m.get("agents_quota")
    return f"{m['agents_active']:,} agents" if quota is None else f"{m['agents_active']:,}/{quota:,} agents"


def _audit(m: dict[str, Any]) -> Text:
    text = Text(f"{m['audit_entries']:>8,} entries  ·  {m['flagged_7d']:,} flagged (7d)  ·  chain ")
    if m["chain_verified"] is True:
        text.append(f"✓ (checkpoint {m['checkpoint_size']:,})", style="green")
    elif m["chain_verified"] is False:
        text.append("✗", style="bold red")
    else:
        text.append("not checked", style="yellow")
    return text


def _webhooks(m: dict[str, Any]) -> str:
    rate = m["delivery_success_24h"]
    success = "no deliveries settled" if rate is None else f"{rate}% success"
    return (
        f"{m['webhooks']:>8,} registered  ·  {m['deliveries_24h']:,} deliveries (24h)  ·  {escape(success)}"
    )
