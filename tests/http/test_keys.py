"""API keys over HTTP: created within the caller's scopes, shown once, listed without secrets, revoked."""

from __future__ import annotations

import pytest

from tests.conftest import Api

pytestmark = pytest.mark.anyio


async def test_a_created_key_is_shown_once_and_works(api: Api) -> None:
    response = await api.client.post(
        "/v1/keys", json={"name": "ci", "scopes": ["sessions:read"]}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"key", "prefix", "tenant_id", "name", "scopes", "created_at", "revoked_at"}
    assert body["key"].startswith(body["prefix"])
    assert body["prefix"].startswith("hld_")
    assert body["tenant_id"] == "acme"
    assert body["scopes"] == ["sessions:read"]
    assert (await api.client.get("/v1/sessions", headers=api.auth(body["key"]))).status_code == 200

    listed = (await api.client.get("/v1/keys", headers=api.auth(api.admin_key))).json()["keys"]
    assert body["prefix"] in [k["prefix"] for k in listed]
    assert body["key"] not in str(listed)
    assert all("key" not in k and "key_hash" not in k for k in listed)


async def test_a_key_cannot_create_a_key_wider_than_itself(api: Api) -> None:
    admin_only = await api.key("admin:write")
    for scopes in (["sessions:write"], ["*"], ["admin:write", "vault:read"]):
        response = await api.client.post(
            "/v1/keys", json={"name": "x", "scopes": scopes}, headers=api.auth(admin_only)
        )
        assert response.status_code == 403, scopes
        assert response.json()["code"] == "insufficient_scope"
    narrower = await api.client.post(
        "/v1/keys", json={"name": "x", "scopes": ["admin:read"]}, headers=api.auth(admin_only)
    )
    assert narrower.status_code == 201


@pytest.mark.parametrize("scopes", [[], ["sessions"], ["sessions:delete"], ["root"], ["*:read"]])
async def test_unknown_or_empty_key_scopes_are_rejected(api: Api, scopes: list[str]) -> None:
    response = await api.client.post(
        "/v1/keys", json={"name": "x", "scopes": scopes}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 400


async def test_a_revoked_key_stops_working_at_once(api: Api) -> None:
    victim = await api.key("sessions:read")
    revoked = await api.client.delete(f"/v1/keys/{victim[:12]}", headers=api.auth(api.admin_key))
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] == "2026-04-05T19:00:00Z"
    response = await api.client.get("/v1/sessions", headers=api.auth(victim))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"


async def test_revoking_an_unknown_key_is_404(api: Api) -> None:
    response = await api.client.delete("/v1/keys/hld_missing1", headers=api.auth(api.admin_key))
    assert response.status_code == 404


async def test_an_idempotent_replay_of_key_creation_never_shows_the_key_again(api: Api) -> None:
    headers = {**api.auth(api.admin_key), "Idempotency-Key": "make-ci-key"}
    body = {"name": "ci", "scopes": ["sessions:read"]}
    first = await api.client.post("/v1/keys", json=body, headers=headers)
    second = await api.client.post("/v1/keys", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["key"] is not None
    assert second.json()["key"] is None
    assert second.headers["Idempotent-Replayed"] == "true"
    assert {**first.json(), "key": None} == second.json()
    listed = (await api.client.get("/v1/keys", headers=api.auth(api.admin_key))).json()["keys"]
    assert [k["name"] for k in listed].count("ci") == 1
