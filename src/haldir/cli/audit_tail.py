"""`haldir audit tail`: the last entries of the ledger as a table, and with --follow the new ones as they
are appended (polling newest-first pages: no entry is skipped however many arrive between two polls)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from haldir.cli.output import AsJson, console, print_json
from haldir.cli.remote import connect
from haldir.client import HaldirClient
from haldir.client.money import plain

PAGE = 200


def tail(
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent's entries.")] = None,
    session: Annotated[str | None, typer.Option("--session", "-s", help="Only this session's.")] = None,
    tool: Annotated[str | None, typer.Option("--tool", "-t", help="Only this tool's.")] = None,
    flagged: Annotated[bool, typer.Option("--flagged", help="Only flagged entries.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, max=PAGE, help="How many to show.")] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new entries until Ctrl-C.")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between polls.")] = 1.0,
    as_json: AsJson = False,
) -> None:
    """The last N entries, oldest first (with --json, one JSON object per line)."""
    filters: dict[str, Any] = {"agent_id": agent, "session_id": session, "tool": tool}
    if flagged:
        filters["flagged"] = True
    with connect(needs="audit:read") as client:
        entries = list(reversed(client.list_entries(**filters, limit=lines)["entries"]))
        _print(entries, as_json=as_json)
        if not follow:
            return
        last = entries[-1]["leaf_index"] if entries else -1
        try:
            while True:
                time.sleep(interval)
                fresh = _newer(client, filters, after=last)
                if fresh:
                    _print(fresh, as_json=as_json)
                    last = fresh[-1]["leaf_index"]
        except KeyboardInterrupt:
            return


def _newer(client: HaldirClient, filters: dict[str, Any], *, after: int) -> list[dict[str, Any]]:
    """The entries past leaf `after`, oldest first: newest-first pages until one reaches back to it."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.list_entries(**filters, limit=PAGE, cursor=cursor)
        fresh = [entry for entry in page["entries"] if entry["leaf_index"] > after]
        found += fresh
        cursor = page.get("next_cursor")
        if len(fresh) < len(page["entries"]) or not cursor:
            return sorted(found, key=lambda entry: int(entry["leaf_index"]))


def _print(entries: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        for entry in entries:
            print_json(plain(entry))
        return
    if not entries:
        return
    table = Table("leaf", "time", "agent", "session", "tool", "action", "status", "cost", "flag")
    for entry in entries:
        status = entry["status"]
        style = {"ok": "green", "denied": "red", "error": "yellow"}.get(status, "")
        table.add_row(
            str(entry["leaf_index"]),
            str(entry["timestamp"]),
            escape(entry.get("agent_id") or "-"),
            escape(entry.get("session_id") or "-"),
            escape(entry["tool"]),
            escape(entry["action"]),
            f"[{style}]{status}[/]",
            str(plain(entry)["cost_usd"]),
            "⚑ " + escape(entry.get("flag_reason") or "") if entry.get("flagged") else "",
        )
    console.print(table)
