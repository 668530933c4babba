"""Caches of keys, sessions and secret versions in one process: what a request served from memory, the
next request after a change through the API no longer serves."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from haldir.store.sql import SqlStore
from tests.conftest import Api

pytestmark = pytest.mark.anyio


@pytest.fixture
async def cached(api: Api) -> Api:
    """The app once its caches are in use: on PostgreSQL only after its listener connected."""
    store: SqlStore = api.app.state.store
    with anyio.fail_after(10):
        while True:
            if store.changes.epoch() is not None:
                return api
            await anyio.sleep(0.01)  # polling the listener task started by the app, not making time pass


def _store(api: Api) -> SqlStore:
    found: SqlStore = api.app.state.store
    return found


async def _list_sessions(api: Api, key: str) -> httpx.Response:
    return await api.client.get("/v1/sessions", headers=api.auth(key))


async def _session(api: Api, *scopes: str) -> str:
    body = {"agent_id": "agent-1", "scopes": list(scopes)}
    response = await api.client.post("/v1/sessions", json=body, headers=api.auth(api.admin_key))
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


async def _check(api: Api, session_id: str, scope: str = "read") -> dict[str, Any]:
    response = await api.client.post(
        f"/v1/sessions/{session_id}/check", json={"scope": scope}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _store_secret(api: Api, name: str, value: str) -> int:
    response = await api.client.post(
        "/v1/secrets", json={"name": name, "value": value}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 201, response.text
    return int(response.json()["version"])


async def _release(api: Api, name: str, session_id: str) -> httpx.Response:
    headers = {**api.auth(api.admin_key), "X-Session-ID": session_id}
    return await api.client.get(f"/v1/secrets/{name}", headers=headers)


# keys


async def test_keys_are_served_from_memory_until_a_change_is_announced(cached: Api) -> None:
    # What the other tests rely on: a key that authenticated is not looked up again, so a change that
    # is not announced goes unseen. Every change through the API announces itself.
    key = await cached.key("sessions:read")
    assert (await _list_sessions(cached, key)).status_code == 200
    await _store(cached).revoke_key("acme", key[:12], at=cached.clock.now())
    assert (await _list_sessions(cached, key)).status_code == 200

    await _store(cached).changes.announce()

    assert (await _list_sessions(cached, key)).status_code == 401


async def test_a_cached_key_is_refused_by_the_next_request_after_it_is_revoked(cached: Api) -> None:
    key = await cached.key("sessions:read")
    for _ in range(2):
        assert (await _list_sessions(cached, key)).status_code == 200

    revoked = await cached.client.delete(f"/v1/keys/{key[:12]}", headers=cached.auth(cached.admin_key))
    assert revoked.status_code == 200, revoked.text

    refused = await _list_sessions(cached, key)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_api_key"
    assert (await _list_sessions(cached, cached.admin_key)).status_code == 200  # other keys still work


# sessions


async def test_sessions_are_served_from_memory_until_a_change_is_announced(cached: Api) -> None:
    session_id = await _session(cached, "read")
    assert (await _check(cached, session_id))["allowed"] is True
    await _store(cached).revoke_session("acme", session_id, at=cached.clock.now())
    assert (await _check(cached, session_id))["allowed"] is True

    await _store(cached).changes.announce()

    assert (await _check(cached, session_id))["allowed"] is False


async def test_a_cached_session_is_refused_by_the_next_check_after_it_is_revoked(cached: Api) -> None:
    session_id = await _session(cached, "read")
    for _ in range(2):
        assert (await _check(cached, session_id))["allowed"] is True

    revoked = await cached.client.delete(f"/v1/sessions/{session_id}", headers=cached.auth(cached.admin_key))
    assert revoked.status_code == 200, revoked.text

    check = await _check(cached, session_id)
    assert check["allowed"] is False
    assert "revoked" in str(check["reason"])


async def test_a_cached_session_never_answers_an_old_budget(cached: Api) -> None:
    body = {"agent_id": "agent-1", "scopes": ["read", "spend"], "spend_limit": "5.00"}
    created = await cached.client.post("/v1/sessions", json=body, headers=cached.auth(cached.admin_key))
    session_id = str(created.json()["session_id"])
    assert (await _check(cached, session_id, "spend:3"))["allowed"] is True
    assert (await _check(cached, session_id, "read"))["allowed"] is True  # cached now, with spent 0.00

    authorized = await cached.client.post(
        "/v1/payments/authorize",
        json={"session_id": session_id, "amount": "4.00"},
        headers=cached.auth(cached.admin_key),
    )
    assert authorized.status_code == 201, authorized.text

    assert (await _check(cached, session_id, "spend:3"))["allowed"] is False
    detail = await cached.client.get(f"/v1/sessions/{session_id}", headers=cached.auth(cached.admin_key))
    assert detail.json()["spent"] == "4.00"


# secrets


async def test_a_released_secret_releases_its_new_version_once_stored_again(cached: Api) -> None:
    session_id = await _session(cached, "read")
    assert await _store_secret(cached, "api_token", "first value") == 1
    for _ in range(2):
        released = await _release(cached, "api_token", session_id)
        assert released.status_code == 200, released.text
        assert (released.json()["version"], released.json()["value"]) == (1, "first value")

    assert await _store_secret(cached, "api_token", "second value") == 2

    released = await _release(cached, "api_token", session_id)
    assert released.status_code == 200, released.text
    assert (released.json()["version"], released.json()["value"]) == (2, "second value")


async def test_a_released_secret_is_gone_at_the_next_release_once_deleted(cached: Api) -> None:
    session_id = await _session(cached, "read")
    await _store_secret(cached, "api_token", "a value")
    assert (await _release(cached, "api_token", session_id)).status_code == 200

    deleted = await cached.client.delete("/v1/secrets/api_token", headers=cached.auth(cached.admin_key))
    assert deleted.status_code == 200, deleted.text

    assert (await _release(cached, "api_token", session_id)).status_code == 404
