"""The SDK's webhook methods on both clients: the governor's names, the secret shown once."""

from __future__ import annotations

import httpx
import pytest

from haldir import AsyncHaldirClient, HaldirClient, NotFound
from tests.client.inprocess import AppTransport, blocking
from tests.conftest import Api
from tests.http.routes import WALKER_HOOK_URL

pytestmark = pytest.mark.anyio

BASE = "http://haldir.test"


async def test_the_async_client_manages_webhooks_and_their_deliveries(api: Api) -> None:
    transport = httpx.ASGITransport(app=api.app)
    async with AsyncHaldirClient(api.admin_key, base_url=BASE, transport=transport) as client:
        created = await client.create_webhook(WALKER_HOOK_URL, ["session.revoked"], "ops")
        webhook_id = created["webhook_id"]
        assert created["secret"].startswith("whsec_")
        assert [hook["webhook_id"] for hook in (await client.list_webhooks())["webhooks"]] == [webhook_id]
        assert "secret" not in await client.get_webhook(webhook_id)
        rotated = await client.rotate_secret(webhook_id)
        assert rotated["secret"] != created["secret"]
        assert (await client.enable_webhook(webhook_id))["enabled"] is True
        queued = await client.test_webhook(webhook_id)
        listed = await client.list_deliveries(webhook_id=webhook_id)
        assert [d["delivery_id"] for d in listed["deliveries"]] == [queued["delivery_id"]]
        assert (await client.redeliver(queued["delivery_id"]))["delivery_id"] == queued["delivery_id"]
        await client.delete_webhook(webhook_id)
        with pytest.raises(NotFound):
            await client.get_webhook(webhook_id)


async def test_the_blocking_client_has_the_same_webhook_methods(api: Api) -> None:
    def work() -> list[str]:
        with HaldirClient(api.admin_key, base_url=BASE, transport=AppTransport(api.app)) as client:
            created = client.create_webhook(WALKER_HOOK_URL, ["*"])
            client.test_webhook(created["webhook_id"])
            deliveries = client.list_deliveries(webhook_id=created["webhook_id"])["deliveries"]
            return [d["event_type"] for d in deliveries]

    assert await blocking(work) == ["webhook.test"]
