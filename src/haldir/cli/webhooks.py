"""`haldir webhooks`: subscriptions and their deliveries on a server (client commands: they reach
HALDIR_URL with HALDIR_API_KEY)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from haldir.cli.output import AsJson
from haldir.cli.remote import connect
from haldir.client import HaldirClient

app = typer.Typer(
    help="Webhooks and their deliveries (client commands: they reach HALDIR_URL with HALDIR_API_KEY).",
    no_args_is_help=True,
)
console = Console(highlight=False, soft_wrap=True)
if not console.is_terminal:
    console.width = 200  # a pipe or a log: whole ids on one line, for grep

ATTEMPTS_SHOWN = 20


@app.command("list")
def list_webhooks(as_json: AsJson = False) -> None:
    """List the tenant's webhooks (never their secrets)."""
    with _client() as client:
        found = client.list_webhooks()["webhooks"]
    if as_json:
        print(json.dumps(found))
        return
    table = Table("webhook", "url", "events", "enabled", "created")
    for hook in found:
        enabled = "yes" if hook["enabled"] else f"no: {hook['disabled_reason']}"
        table.add_row(
            hook["webhook_id"],
            escape(hook["url"]),
            ", ".join(hook["events"]),
            escape(enabled),
            hook["created_at"],
        )
    console.print(table)


@app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="Where to POST events: https://… (http only when allowed).")],
    events: Annotated[
        list[str] | None,
        typer.Option("--events", "-e", help="Event types, repeated or comma-separated (default '*': all)."),
    ] = None,
    description: Annotated[str, typer.Option("--description", "-d", help="A note for people.")] = "",
    as_json: AsJson = False,
) -> None:
    """Subscribe a URL to events and print its signing secret, once."""
    wanted = [part.strip() for item in events or ["*"] for part in item.split(",") if part.strip()]
    with _client() as client:
        created = client.create_webhook(url, wanted, description)
    if as_json:
        print(json.dumps(created))
        return
    console.print(f"webhook {created['webhook_id']} for {', '.join(created['events'])}")
    console.print(f"signing secret (shown once, store it now):\n\n  {created['secret']}\n")


@app.command("test")
def send_test(
    webhook_id: Annotated[str, typer.Argument(help="The webhook, e.g. whk_…")], as_json: AsJson = False
) -> None:
    """Queue a `webhook.test` event for one webhook."""
    with _client() as client:
        queued = client.test_webhook(webhook_id)
    if as_json:
        print(json.dumps(queued))
        return
    console.print(f"queued {queued['delivery_id']} (webhook-id {queued['event_id']})")


@app.command("deliveries")
def deliveries(
    webhook_id: Annotated[str | None, typer.Option("--webhook", "-w", help="Only this webhook's.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", "-s", help="pending, delivered or failed.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """The last 20 delivery attempts, newest first."""
    with _client() as client:
        found = client.list_deliveries(webhook_id=webhook_id, status=status, limit=ATTEMPTS_SHOWN)[
            "deliveries"
        ]
    attempts = sorted(
        (_attempt_row(delivery, attempt) for delivery in found for attempt in delivery["history"]),
        key=lambda row: (row["attempted_at"], row["attempt"]),
        reverse=True,
    )[:ATTEMPTS_SHOWN]
    if as_json:
        print(json.dumps(attempts))
        return
    table = Table("attempted", "delivery", "event", "try", "status", "latency", "result", "next attempt")
    for row in attempts:
        code = "-" if row["status_code"] is None else str(row["status_code"])
        table.add_row(
            row["attempted_at"],
            row["delivery_id"],
            row["event_type"],
            str(row["attempt"]),
            code,
            f"{row['latency_ms']} ms",
            escape(row["error"] or "ok"),
            row["next_attempt_at"] or "",
        )
    console.print(table)


@app.command("redeliver")
def redeliver(
    delivery_id: Annotated[str, typer.Argument(help="The delivery, e.g. whd_…")], as_json: AsJson = False
) -> None:
    """Queue a delivery again, due now."""
    with _client() as client:
        queued = client.redeliver(delivery_id)
    if as_json:
        print(json.dumps(queued))
        return
    console.print(f"queued {queued['delivery_id']} again (status {queued['status']})")


def _attempt_row(delivery: dict[str, Any], attempt: dict[str, Any]) -> dict[str, Any]:
    return {
        "delivery_id": delivery["delivery_id"],
        "webhook_id": delivery["webhook_id"],
        "event_type": delivery["event_type"],
        "delivery_status": delivery["status"],
        **attempt,
    }


def _client() -> HaldirClient:
    return connect(needs="webhooks:write")
