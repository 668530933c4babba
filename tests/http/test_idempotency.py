"""Idempotency-Key: concurrent duplicates execute once and all get the same response."""

from __future__ import annotations

import anyio
import httpx
import pytest

from tests.conftest import Api

pytestmark = pytest.mark.anyio

BODY = {"agent_id": "agent-1", "scopes": ["read", "spend:5"], "ttl": 120}


async def test_fifty_concurrent_identical_requests_create_one_session(api: Api) -> None:
    headers = {**api.auth(api.admin_key), "Idempotency-Key": "order-7781"}
    responses: list[httpx.Response] = []

    async def send() -> None:
        responses.append(await api.client.post("/v1/sessions", json=BODY, headers=headers))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(send)

    assert [r.status_code for r in responses] == [201] * 50
    assert len({r.text for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 49
    listed = (await api.client.get("/v1/sessions", headers=api.auth(api.admin_key))).json()["sessions"]
    assert [s["session_id"] for s in listed] == [responses[0].json()["session_id"]]


async def test_the_same_key_with_a_different_body_is_422(api: Api) -> None:
    headers = {**api.auth(api.admin_key), "Idempotency-Key": "k1"}
    assert (await api.client.post("/v1/sessions", json=BODY, headers=headers)).status_code == 201
    response = await api.client.post("/v1/sessions", json={**BODY, "ttl": 121}, headers=headers)
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"


async def test_the_same_key_on_another_operation_is_422(api: Api) -> None:
    headers = {**api.auth(api.admin_key), "Idempotency-Key": "k2"}
    assert (await api.client.post("/v1/sessions", json=BODY, headers=headers)).status_code == 201
    other = await api.client.post(
        "/v1/keys", json={"name": "x", "scopes": ["sessions:read"]}, headers=headers
    )
    assert other.status_code == 422


async def test_idempotency_keys_belong_to_a_tenant(api: Api) -> None:
    other_tenant = await api.key("*", tenant="globex")
    ours = await api.client.post(
        "/v1/sessions", json=BODY, headers={**api.auth(api.admin_key), "Idempotency-Key": "k"}
    )
    theirs = await api.client.post(
        "/v1/sessions", json=BODY, headers={**api.auth(other_tenant), "Idempotency-Key": "k"}
    )
    assert ours.status_code == theirs.status_code == 201
    assert ours.json()["session_id"] != theirs.json()["session_id"]
    assert "Idempotent-Replayed" not in theirs.headers


async def test_a_replay_answers_the_same_even_after_the_session_changes(api: Api) -> None:
    headers = {**api.auth(api.admin_key), "Idempotency-Key": "k3"}
    first = await api.client.post("/v1/sessions", json=BODY, headers=headers)
    await api.client.delete(f"/v1/sessions/{first.json()['session_id']}", headers=api.auth(api.admin_key))
    api.clock.advance(30)
    again = await api.client.post("/v1/sessions", json=BODY, headers=headers)
    assert again.json() == first.json()


async def test_a_failed_request_does_not_use_up_its_key(api: Api) -> None:
    headers = {**api.auth(api.admin_key), "Idempotency-Key": "k4"}
    bad = await api.client.post("/v1/sessions", json={**BODY, "scopes": ["Teleport!"]}, headers=headers)
    assert bad.status_code == 400
    good = await api.client.post("/v1/sessions", json=BODY, headers=headers)
    assert good.status_code == 201


@pytest.mark.parametrize("key", ["", "has space", "x" * 256])
async def test_malformed_idempotency_keys_are_400(api: Api, key: str) -> None:
    headers = {**api.auth(api.admin_key), "Idempotency-Key": key}
    response = await api.client.post("/v1/sessions", json=BODY, headers=headers)
    assert response.status_code == 400
