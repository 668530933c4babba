"""`haldir status` (each component as a green, yellow or red pill; the exit code is the worst: 0, 1 or 2)
and `haldir ready` (exit 0 when the server is ready to serve, 1 when not; silent unless --json)."""

from __future__ import annotations

from typing import Any

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from haldir.cli.output import AsJson, console, print_json
from haldir.cli.remote import connect, server_url
from haldir.core.status import Level
from haldir.errors import ServerUnavailable

READY_TIMEOUT = 5.0
_STYLE = {"green": "green", "yellow": "yellow", "red": "bold red"}


def status(as_json: AsJson = False) -> None:
    """Each component green, yellow or red (`GET /v1/status`): API, store, migrations, ledger, signer,
    webhook delivery, upstreams. Exits 0 all green, 1 some yellow, 2 some red (the server unreachable too)."""
    with connect(needs="audit:read") as client:
        try:
            found: dict[str, Any] = client.status()
        except ServerUnavailable as exc:
            found = {"status": "red", "components": [{"name": "api", "status": "red", "detail": exc.message}]}
    if as_json:
        print_json(found)
    else:
        table = Table.grid(padding=(0, 2))
        for component in found["components"]:
            light = component["status"]
            table.add_row(
                f"[{_STYLE[light]}]●[/] {component['name']}",
                f"[{_STYLE[light]}]{light}[/]",
                escape(component["detail"]),
            )
        console.print(table)
    raise typer.Exit(Level[found["status"]].value)


def ready(as_json: AsJson = False) -> None:
    """Exit 0 when the server answers ready (`GET /readyz`: store reachable, schema current), else 1.
    Needs no key. Prints nothing unless --json."""
    url = f"{server_url().rstrip('/')}/readyz"
    try:
        answer = httpx.get(url, timeout=READY_TIMEOUT)
        found: dict[str, Any] = {"status_code": answer.status_code, **answer.json()}
    except (httpx.HTTPError, ValueError) as exc:
        found = {"status_code": None, "error": f"{url}: {type(exc).__name__}: {exc}"}
    is_ready = found["status_code"] == 200
    if as_json:
        print_json({"ready": is_ready, "url": url, **found})
    raise typer.Exit(0 if is_ready else 1)
