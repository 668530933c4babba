"""The client of the CLI's client commands: the server at HALDIR_URL, with HALDIR_API_KEY."""

from __future__ import annotations

from haldir.client import HaldirClient
from haldir.errors import Unauthenticated
from haldir.settings import ClientSettings


def connect(*, needs: str) -> HaldirClient:
    """A client of the configured server; `needs` names the key scope the command uses, for the message
    when no key is set."""
    settings = ClientSettings()
    if not settings.api_key:
        raise Unauthenticated(
            f"HALDIR_API_KEY is not set: client commands need an API key with scope {needs} "
            f"(an operator makes one with `haldir keys create --scopes {needs}`)"
        )
    return HaldirClient(api_key=settings.api_key, base_url=settings.url)
