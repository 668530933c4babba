"""`haldir login` and `haldir logout`: check a key against a server and keep both for the client
commands, so they work without HALDIR_URL and HALDIR_API_KEY (which still win when set)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from haldir.cli.credentials import Credentials, credentials_path, forget_credentials, save_credentials
from haldir.cli.output import AsJson, console, print_json
from haldir.cli.remote import server_url
from haldir.client import HaldirClient
from haldir.errors import InvalidRequest


def login(
    url: Annotated[
        str | None, typer.Option("--url", help="The server (default HALDIR_URL, the saved one, or local).")
    ] = None,
    api_key_stdin: Annotated[
        bool, typer.Option("--api-key-stdin", help="Read the key from stdin instead of asking (scripts).")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Check an API key against the server and save both for this user (file mode 0600)."""
    url = (url or server_url()).rstrip("/")
    if api_key_stdin:
        api_key = sys.stdin.readline().strip()
    else:
        api_key = typer.prompt("API key (hld_…)", hide_input=True).strip()
    if not api_key:
        raise InvalidRequest("no API key given")
    with HaldirClient(api_key=api_key, base_url=url) as client:
        key = client.current_key()  # an invalid or revoked key fails here: nothing is saved
    path = save_credentials(Credentials(url=url, api_key=api_key))
    if as_json:
        print_json({"url": url, **key, "saved_to": str(path)})
        return
    console.print(
        f"Logged in to {escape(url)} as {key['prefix']} (tenant {escape(key['tenant_id'])}, scopes "
        f"{', '.join(key['scopes'])}). Saved to {path}."
    )


def logout(as_json: AsJson = False) -> None:
    """Forget the saved server and key."""
    removed = forget_credentials()
    if as_json:
        print_json({"logged_out": removed, "path": str(credentials_path())})
    elif removed:
        console.print(f"Logged out: removed {credentials_path()}.")
    else:
        console.print("Not logged in.")
