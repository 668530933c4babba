"""What the in-process integration tests share: an async client of the app, a weather agent's session with
its Vault secret, and what the ledger and the budget say of it afterwards."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx

from haldir import AsyncHaldirClient
from tests.conftest import Api

BASE = "http://haldir.test"
TOKEN = "wt-51f0c2"  # the value of the secret weather_token


def aclient(api: Api) -> AsyncHaldirClient:
    return AsyncHaldirClient(api_key=api.admin_key, base_url=BASE, transport=httpx.ASGITransport(app=api.app))


async def weather_session(api: Api, *, limit: str = "5") -> str:
    """A session of `weather-bot` (scopes execute and read, budget `limit` USD), with weather_token stored."""
    async with aclient(api) as client:
        await client.store_secret("weather_token", TOKEN, "read")
        made = await client.create_session("weather-bot", ["execute", "read"], 600, limit)
    return str(made["session_id"])


async def governed_calls(api: Api, session_id: str) -> list[dict[str, Any]]:
    """The session's governed-call entries, in ledger order."""
    async with aclient(api) as client:
        page = await client.list_entries(session_id=session_id, limit=100)
    entries = sorted(page["entries"], key=lambda entry: entry["leaf_index"])
    return [e for e in entries if e["action"] == "tools/call"]


async def spent(api: Api, session_id: str) -> Decimal:
    async with aclient(api) as client:
        return Decimal((await client.get_session(session_id))["spent"])
