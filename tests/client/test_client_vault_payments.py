"""The SDK's Vault and payment methods, driven through the app in-process."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from decimal import Decimal
from typing import Any, get_type_hints

import httpx
import pytest

from haldir import AsyncHaldirClient, HaldirClient, NotFound, ScopeDenied
from haldir.errors import BudgetExceeded, Conflict
from haldir.governor import Governor
from tests.conftest import Api

BASE = "http://haldir.test"
NEW_METHODS = [
    "store_secret",
    "get_secret",
    "secret_info",
    "list_secrets",
    "delete_secret",
    "authorize_payment",
    "capture_payment",
    "void_payment",
    "get_payment",
    "list_payments",
]


def _client(api: Api) -> AsyncHaldirClient:
    return AsyncHaldirClient(api_key=api.admin_key, base_url=BASE, transport=httpx.ASGITransport(app=api.app))


@pytest.mark.anyio
async def test_the_async_client_stores_releases_and_deletes_secrets(api: Api) -> None:
    async with _client(api) as client:
        session = await client.create_session(agent_id="bot", scopes=["execute"])
        session_id = session["session_id"]
        stored = await client.store_secret(name="stripe_key", value="sk_1", scope_required="execute")
        assert stored["version"] == 1
        await client.store_secret(name="stripe_key", value="sk_2", scope_required="execute")
        replayed = await client.store_secret(name="db", value="pw", idempotency_key="once")
        assert await client.store_secret(name="db", value="pw", idempotency_key="once") == replayed

        released = await client.get_secret("stripe_key", session_id=session_id)
        assert (released["value"], released["version"]) == ("sk_2", 2)
        assert (await client.get_secret("stripe_key", session_id=session_id, version=1))["value"] == "sk_1"
        info = await client.secret_info("stripe_key")
        assert "value" not in info
        assert (info["versions"], info["access_count"]) == (2, 2)
        listed = await client.list_secrets(limit=1)
        assert [s["name"] for s in listed["secrets"]] == ["db"]
        rest = await client.list_secrets(cursor=listed["next_cursor"])
        assert [s["name"] for s in rest["secrets"]] == ["stripe_key"]

        with pytest.raises(ScopeDenied):
            await client.get_secret("db", session_id=session_id)
        assert await client.delete_secret("stripe_key") == {"name": "stripe_key", "deleted_versions": 2}
        with pytest.raises(NotFound):
            await client.secret_info("stripe_key")


@pytest.mark.anyio
async def test_the_async_client_authorizes_captures_and_voids_payments(api: Api) -> None:
    async with _client(api) as client:
        session = await client.create_session(agent_id="bot", scopes=["spend"], spend_limit="10")
        session_id = session["session_id"]
        first = await client.authorize_payment(
            session_id=session_id, amount="4", description="credits", idempotency_key="order-1"
        )
        again = await client.authorize_payment(
            session_id=session_id, amount="4", description="credits", idempotency_key="order-1"
        )
        assert again["authorization_id"] == first["authorization_id"]
        assert first["remaining_budget"] == Decimal("6.00")
        api.clock.advance(1)  # payments list newest first
        second = await client.authorize_payment(session_id=session_id, amount="3")

        await client.log_action(
            session_id=session_id,
            tool="stripe",
            action="charge",
            cost_usd="1.50",
            authorization_id=first["authorization_id"],
        )
        captured = await client.capture_payment(first["authorization_id"], amount="2")
        assert (captured["status"], captured["captured_amount"], captured["reported"]) == (
            "captured",
            Decimal("2.00"),
            Decimal("1.50"),
        )
        assert (await client.void_payment(second["authorization_id"]))["status"] == "voided"
        with pytest.raises(Conflict):
            await client.capture_payment(second["authorization_id"])
        with pytest.raises(BudgetExceeded) as refused:
            await client.authorize_payment(session_id=session_id, amount="9")
        assert refused.value.details["remaining_budget"] == "8.00"

        assert (await client.get_payment(first["authorization_id"]))["description"] == "credits"
        page = await client.list_payments(session_id=session_id, limit=1)
        assert [p["authorization_id"] for p in page["payments"]] == [second["authorization_id"]]
        assert (await client.get_session(session_id))["spent"] == Decimal("2.00")
        assert (await client.spend(session_id=session_id))["total_usd"] == Decimal("2.00")


def _governed(name: str) -> Callable[..., Any]:
    """The governor's method `name`, on whichever of its services has it (exactly one does)."""
    hints = get_type_hints(Governor)
    owners = [hints[field.name] for field in dataclasses.fields(Governor)]
    found = [getattr(owner, name) for owner in owners if hasattr(owner, name)]
    assert len(found) == 1, name
    method: Callable[..., Any] = found[0]
    return method


def test_the_clients_name_the_new_methods_as_the_governor_does_with_the_same_signatures() -> None:
    for name in NEW_METHODS:
        sync = inspect.signature(getattr(HaldirClient, name))
        aio = inspect.signature(getattr(AsyncHaldirClient, name))
        assert sync == aio, name
        governed = inspect.signature(_governed(name)).parameters
        assert [p for p in sync.parameters if p != "self"] == [
            p for p in governed if p not in ("self", "principal")
        ], name
    assert "authorization_id" in inspect.signature(HaldirClient.log_action).parameters
    assert "authorization_id" in inspect.signature(AsyncHaldirClient.log_action).parameters
