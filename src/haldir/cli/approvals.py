"""`haldir approvals`: list, show, approve and deny approval requests (client commands: they reach
HALDIR_URL with HALDIR_API_KEY, whose key must not be the one that asked)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from haldir.cli.output import AsJson
from haldir.cli.remote import connect
from haldir.client.money import plain

app = typer.Typer(
    help="Decide approval requests (client commands: they reach HALDIR_URL with HALDIR_API_KEY).",
    no_args_is_help=True,
)
console = Console(highlight=False, soft_wrap=True)

ApprovalId = Annotated[str, typer.Argument(help="The approval's id, apr_….")]
Note = Annotated[str | None, typer.Option("--note", "-n", help="Why; recorded with the decision.")]


@app.command("pending")
def pending(
    limit: Annotated[int, typer.Option("--limit", help="At most this many, oldest first.")] = 50,
    as_json: AsJson = False,
) -> None:
    """The requests waiting for a decision, oldest first."""
    with connect(needs="approvals:read") as client:
        found = [plain(approval) for approval in client.list_pending_approvals(limit=limit)["approvals"]]
    if as_json:
        print(json.dumps(found))
        return
    if not found:
        console.print("no pending approvals")
        return
    for approval in found:  # one block each: ids are never cut, whatever the terminal's width
        console.print(
            f"[bold]{approval['approval_id']}[/]  {approval['kind']}  {escape(approval['agent_id'])}  "
            f"{escape(approval['tool'])}  {approval['amount_usd']} USD  expires {approval['expires_at']}"
        )
        console.print(f"  {escape(approval['reason'])}")


@app.command("show")
def show(approval_id: ApprovalId, as_json: AsJson = False) -> None:
    """One approval request: what it asks, its status and decision."""
    with connect(needs="approvals:read") as client:
        _print(plain(client.get_approval(approval_id)), as_json=as_json)


@app.command("approve")
def approve(approval_id: ApprovalId, note: Note = None, as_json: AsJson = False) -> None:
    """Approve a pending request: the same request made again runs once."""
    with connect(needs="approvals:write") as client:
        _print(plain(client.approve(approval_id, note=note)), as_json=as_json)


@app.command("deny")
def deny(approval_id: ApprovalId, note: Note = None, as_json: AsJson = False) -> None:
    """Deny a pending request."""
    with connect(needs="approvals:write") as client:
        _print(plain(client.deny(approval_id, note=note)), as_json=as_json)


def _print(approval: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(approval))
        return
    console.print(f"{approval['approval_id']}: [bold]{approval['status']}[/]")
    for field in (
        "kind",
        "session_id",
        "agent_id",
        "tool",
        "amount_usd",
        "reason",
        "requested_by",
        "expires_at",
    ):
        console.print(f"  {field}: {escape(str(approval[field]))}")
    if approval["decided_by"] is not None or approval["decided_at"] is not None:
        by = escape(str(approval["decided_by"] or "the operator"))
        console.print(f"  decided: {approval['decided_at']} by {by}")
    if approval["note"]:
        console.print(f"  note: {escape(approval['note'])}")
