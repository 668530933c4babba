"""Webhook routes: the secret shown once and never again, clear 4xx for bad input, and a tenant that
never sees or touches another tenant's webhooks or deliveries."""

from __future__ import annotations

import base64
import io

import pytest

from tests.conftest import Api
from tests.http.routes import WALKER_HOOK_URL

pytestmark = pytest.mark.anyio


async def _create(api: Api, headers: dict[str, str], **body: object) -> dict[str, object]:
    response = await api.client.post(
        "/v1/webhooks", json={"url": WALKER_HOOK_URL, "events": ["*"], **body}, headers=headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


async def test_the_signing_secret_is_shown_at_creation_and_never_again(
    api: Api, json_logs: io.StringIO
) -> None:
    owner = api.auth(api.admin_key)
    created = await _create(api, owner, events=["audit.flagged", "session.revoked"], description="ops")
    secret = str(created["secret"])
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert created["events"] == ["audit.flagged", "session.revoked"]
    assert created["enabled"] is True
    webhook_id = created["webhook_id"]
    for path in ("/v1/webhooks", f"/v1/webhooks/{webhook_id}", "/v1/webhooks/deliveries"):
        response = await api.client.get(path, headers=owner)
        assert response.status_code == 200
        assert secret not in response.text
        assert "whsec_" not in response.text
    rotated = (await api.client.post(f"/v1/webhooks/{webhook_id}/rotate-secret", headers=owner)).json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != secret
    assert rotated["previous_secret_expires_at"] is not None
    logged = json_logs.getvalue()
    assert secret not in logged
    assert rotated["secret"] not in logged


async def test_a_star_subscription_is_stored_as_star_alone(api: Api) -> None:
    created = await _create(api, api.auth(api.admin_key), events=["*", "audit.flagged"])
    assert created["events"] == ["*"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "http://127.0.0.1:9/hook", "events": ["*"]}, "outbound_refused"),
        ({"url": "http://169.254.169.254/latest", "events": ["*"]}, "outbound_refused"),
        ({"url": "http://1.1.1.1/hook", "events": ["*"]}, "outbound_refused"),  # https required
        ({"url": "file:///etc/passwd", "events": ["*"]}, "outbound_refused"),
        ({"url": WALKER_HOOK_URL, "events": ["payment.made"]}, "invalid_request"),
        ({"url": WALKER_HOOK_URL, "events": [7]}, "invalid_request"),
        ({"url": WALKER_HOOK_URL, "events": []}, "invalid_request"),
        ({"url": WALKER_HOOK_URL}, "invalid_request"),
        ({"url": WALKER_HOOK_URL, "events": ["*"], "secret": "mine"}, "invalid_request"),
        ({"url": WALKER_HOOK_URL, "events": ["*"], "description": "a\x00b"}, "invalid_request"),
    ],
)
async def test_bad_webhooks_are_refused_with_a_4xx_that_says_why(
    api: Api, body: dict[str, object], code: str
) -> None:
    response = await api.client.post("/v1/webhooks", json=body, headers=api.auth(api.admin_key))
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["code"] == code


@pytest.mark.parametrize("query", ["status=lost", "webhook_id=nope", "limit=0", "limit=500", "cursor=%%%"])
async def test_bad_delivery_queries_are_refused_with_a_400(api: Api, query: str) -> None:
    response = await api.client.get(f"/v1/webhooks/deliveries?{query}", headers=api.auth(api.admin_key))
    assert 400 <= response.status_code < 500, response.text


async def test_unknown_ids_are_404(api: Api) -> None:
    owner = api.auth(api.admin_key)
    for method, path in [
        ("GET", "/v1/webhooks/whk_missing"),
        ("GET", "/v1/webhooks/not-an-id"),
        ("DELETE", "/v1/webhooks/whk_missing"),
        ("POST", "/v1/webhooks/whk_missing/rotate-secret"),
        ("POST", "/v1/webhooks/whk_missing/test"),
        ("POST", "/v1/webhooks/whk_missing/enable"),
        ("POST", "/v1/webhooks/deliveries/whd_missing/redeliver"),
        ("POST", "/v1/webhooks/deliveries/x" + "y" * 300 + "/redeliver"),
    ]:
        response = await api.client.request(method, path, headers=owner)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "not_found"


async def test_another_tenant_never_sees_or_touches_a_webhook_or_its_deliveries(api: Api) -> None:
    owner = api.auth(api.admin_key)
    created = await _create(api, owner)
    webhook_id = created["webhook_id"]
    queued = (await api.client.post(f"/v1/webhooks/{webhook_id}/test", headers=owner)).json()
    delivery_id = queued["delivery_id"]
    intruder = api.auth(await api.key("webhooks:write", tenant="intruder"))

    for method, path in [
        ("GET", f"/v1/webhooks/{webhook_id}"),
        ("DELETE", f"/v1/webhooks/{webhook_id}"),
        ("POST", f"/v1/webhooks/{webhook_id}/rotate-secret"),
        ("POST", f"/v1/webhooks/{webhook_id}/test"),
        ("POST", f"/v1/webhooks/{webhook_id}/enable"),
        ("POST", f"/v1/webhooks/deliveries/{delivery_id}/redeliver"),
    ]:
        response = await api.client.request(method, path, headers=intruder)
        assert response.status_code == 404, (method, path, response.text)
    assert (await api.client.get("/v1/webhooks", headers=intruder)).json()["webhooks"] == []
    for query in ("", f"?webhook_id={webhook_id}"):
        listed = await api.client.get(f"/v1/webhooks/deliveries{query}", headers=intruder)
        assert listed.json()["deliveries"] == []

    # Nothing the intruder tried changed the owner's webhook or queued anything.
    mine = (await api.client.get(f"/v1/webhooks/{webhook_id}", headers=owner)).json()
    unchanged = ("url", "events", "description", "updated_at", "previous_secret_expires_at")
    assert {k: mine[k] for k in unchanged} == {k: created[k] for k in unchanged}
    deliveries = (await api.client.get("/v1/webhooks/deliveries", headers=owner)).json()["deliveries"]
    assert [d["delivery_id"] for d in deliveries] == [delivery_id]


async def test_deleting_a_webhook_deletes_its_deliveries(api: Api) -> None:
    owner = api.auth(api.admin_key)
    webhook_id = (await _create(api, owner))["webhook_id"]
    await api.client.post(f"/v1/webhooks/{webhook_id}/test", headers=owner)
    deleted = await api.client.delete(f"/v1/webhooks/{webhook_id}", headers=owner)
    assert deleted.status_code == 200
    assert (await api.client.get(f"/v1/webhooks/{webhook_id}", headers=owner)).status_code == 404
    assert (await api.client.get("/v1/webhooks/deliveries", headers=owner)).json()["deliveries"] == []


async def test_deliveries_page_newest_first_with_a_cursor(api: Api) -> None:
    owner = api.auth(api.admin_key)
    webhook_id = (await _create(api, owner))["webhook_id"]
    queued = []
    for _ in range(3):
        api.clock.advance(1)
        queued.append((await api.client.post(f"/v1/webhooks/{webhook_id}/test", headers=owner)).json())
    first = (await api.client.get("/v1/webhooks/deliveries?limit=2", headers=owner)).json()
    assert [d["delivery_id"] for d in first["deliveries"]] == [
        queued[2]["delivery_id"],
        queued[1]["delivery_id"],
    ]
    rest = await api.client.get(
        f"/v1/webhooks/deliveries?limit=2&cursor={first['next_cursor']}", headers=owner
    )
    assert [d["delivery_id"] for d in rest.json()["deliveries"]] == [queued[0]["delivery_id"]]
    assert rest.json()["next_cursor"] is None
    payload = first["deliveries"][0]["payload"]
    assert payload["type"] == "webhook.test"
    assert payload["data"]["webhook_id"] == webhook_id
