"""The client of the CLI's client commands: the server and key from HALDIR_URL and HALDIR_API_KEY, else
from `haldir login`'s saved credentials."""

from __future__ import annotations

from haldir.cli.credentials import load_credentials
from haldir.client import HaldirClient
from haldir.errors import Unauthenticated
from haldir.settings import ClientSettings


def server_url() -> str:
    """HALDIR_URL if set, else the saved login's URL, else the default."""
    settings = ClientSettings()
    if "url" in settings.model_fields_set:
        return settings.url
    saved = load_credentials()
    return saved.url if saved is not None else settings.url


def client_settings(*, needs: str) -> ClientSettings:
    """The server and key to use; `needs` names the key scope the command uses, for the message when no
    key is set. The environment wins over the saved login, variable by variable."""
    settings = ClientSettings()
    saved = load_credentials()
    api_key = settings.api_key or (saved.api_key if saved is not None else None)
    if not api_key:
        raise Unauthenticated(
            f"no API key: run 'haldir login' or set HALDIR_API_KEY; this command needs scope {needs} "
            f"(an operator makes such a key with `haldir keys create --scopes {needs}`)"
        )
    return ClientSettings(url=server_url(), api_key=api_key)


def connect(*, needs: str) -> HaldirClient:
    settings = client_settings(needs=needs)
    return HaldirClient(api_key=settings.api_key, base_url=settings.url)
