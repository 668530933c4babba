"""The Vault over HTTP: versions, releases only to sessions that hold the scope, metadata, delete, ledger."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import Api
from tests.http.routes import SAMPLES, body_for, fill, seed

pytestmark = pytest.mark.anyio

VALUE = "sk_live_51Hx-very-secret"
METADATA = {
    "name",
    "latest_version",
    "versions",
    "scope_required",
    "access_count",
    "last_accessed_at",
    "created_at",
    "updated_at",
}


async def _store(api: Api, name: str = "stripe_key", value: str = VALUE, **body: Any) -> dict[str, Any]:
    response = await api.client.post(
        "/v1/secrets", json={"name": name, "value": value, **body}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _session(api: Api, *scopes: str, ttl: int | None = None) -> str:
    body: dict[str, Any] = {"agent_id": "agent-1", "scopes": list(scopes)}
    if ttl is not None:
        body["ttl"] = ttl
    response = await api.client.post("/v1/sessions", json=body, headers=api.auth(api.admin_key))
    assert response.status_code == 201, response.text
    return str(response.json()["session_id"])


async def _release(api: Api, name: str, session_id: str, *, version: int | None = None) -> httpx.Response:
    params = {} if version is None else {"version": str(version)}
    headers = {**api.auth(api.admin_key), "X-Session-ID": session_id}
    return await api.client.get(f"/v1/secrets/{name}", params=params, headers=headers)


async def _vault_entries(api: Api) -> list[dict[str, Any]]:
    response = await api.client.get(
        "/v1/audit", params={"tool": "vault", "order": "asc"}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 200, response.text
    return list(response.json()["entries"])


async def test_storing_answers_the_version_and_never_the_value(api: Api) -> None:
    response = await api.client.post(
        "/v1/secrets",
        json={"name": "stripe_key", "value": VALUE, "scope_required": "execute"},
        headers=api.auth(api.admin_key),
    )
    assert response.status_code == 201
    assert response.json() == {
        "name": "stripe_key",
        "version": 1,
        "scope_required": "execute",
        "created_at": "2026-04-05T19:00:00Z",
    }
    assert VALUE not in response.text


async def test_scope_required_defaults_to_read(api: Api) -> None:
    assert (await _store(api))["scope_required"] == "read"


async def test_storing_again_makes_a_new_version_and_the_old_one_stays_readable(api: Api) -> None:
    await _store(api, value="first")
    api.clock.advance(60)
    second = await _store(api, value="second")
    assert second["version"] == 2
    session_id = await _session(api, "read")

    latest = await _release(api, "stripe_key", session_id)
    old = await _release(api, "stripe_key", session_id, version=1)
    assert latest.json() == {"name": "stripe_key", "version": 2, "value": "second", "scope_required": "read"}
    assert old.json()["value"] == "first"
    assert old.json()["version"] == 1

    info = (await api.client.get("/v1/secrets/stripe_key", headers=api.auth(api.admin_key))).json()
    assert info["latest_version"] == 2
    assert info["versions"] == 2
    assert info["created_at"] == "2026-04-05T19:00:00Z"
    assert info["updated_at"] == "2026-04-05T19:01:00Z"


async def test_a_session_holding_the_scope_gets_the_value_with_no_store_caching(api: Api) -> None:
    await _store(api, scope_required="execute:payments")
    session_id = await _session(api, "execute")
    response = await _release(api, "stripe_key", session_id)
    assert response.status_code == 200, response.text
    assert response.json()["value"] == VALUE
    assert response.headers["Cache-Control"] == "no-store"


async def test_a_session_lacking_the_scope_is_denied_without_the_value(api: Api) -> None:
    await _store(api, scope_required="execute:payments")
    session_id = await _session(api, "read", "execute:email")
    response = await _release(api, "stripe_key", session_id)
    assert response.status_code == 403
    assert response.json()["code"] == "scope_denied"
    assert "execute:payments" in response.json()["error"]
    assert VALUE not in response.text
    assert "value" not in response.json()


async def test_an_expired_session_is_denied(api: Api) -> None:
    await _store(api)
    session_id = await _session(api, "read", ttl=60)
    api.clock.advance(61)
    response = await _release(api, "stripe_key", session_id)
    assert response.status_code == 403
    assert response.json()["code"] == "scope_denied"
    assert VALUE not in response.text


async def test_a_revoked_session_is_denied(api: Api) -> None:
    await _store(api)
    session_id = await _session(api, "read")
    revoked = await api.client.delete(f"/v1/sessions/{session_id}", headers=api.auth(api.admin_key))
    assert revoked.status_code == 200
    response = await _release(api, "stripe_key", session_id)
    assert response.status_code == 403
    assert response.json()["code"] == "scope_denied"
    assert VALUE not in response.text


async def test_without_a_session_header_only_metadata_is_returned(api: Api) -> None:
    await _store(api)
    response = await api.client.get("/v1/secrets/stripe_key", headers=api.auth(api.admin_key))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == METADATA
    assert "value" not in body
    assert VALUE not in response.text
    assert body["access_count"] == 0
    assert body["last_accessed_at"] is None


async def test_a_version_without_a_session_header_is_refused(api: Api) -> None:
    await _store(api)
    response = await api.client.get("/v1/secrets/stripe_key?version=1", headers=api.auth(api.admin_key))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


async def test_releases_are_counted_in_the_metadata(api: Api) -> None:
    await _store(api)
    session_id = await _session(api, "read")
    api.clock.advance(30)
    for _ in range(3):
        assert (await _release(api, "stripe_key", session_id)).status_code == 200
    info = (await api.client.get("/v1/secrets/stripe_key", headers=api.auth(api.admin_key))).json()
    assert info["access_count"] == 3
    assert info["last_accessed_at"] == "2026-04-05T19:00:30Z"


async def test_an_unknown_secret_or_version_is_404(api: Api) -> None:
    await _store(api)
    session_id = await _session(api, "read")
    for response in (
        await api.client.get("/v1/secrets/nope", headers=api.auth(api.admin_key)),
        await _release(api, "nope", session_id),
        await _release(api, "stripe_key", session_id, version=2),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"


async def test_an_unknown_session_is_404_and_releases_nothing(api: Api) -> None:
    await _store(api)
    response = await _release(api, "stripe_key", "ses_doesnotexist0000000000")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert VALUE not in response.text


async def test_a_bad_name_is_400(api: Api) -> None:
    response = await api.client.post(
        "/v1/secrets", json={"name": "../etc", "value": VALUE}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 400
    assert VALUE not in response.text


async def test_unknown_body_fields_are_refused(api: Api) -> None:
    response = await api.client.post(
        "/v1/secrets", json={"name": "k", "value": VALUE, "ttl": 5}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


async def test_the_list_carries_metadata_and_never_values(api: Api) -> None:
    for name in ("b_key", "a_key", "c_key"):
        await _store(api, name=name)
    first = await api.client.get("/v1/secrets?limit=2", headers=api.auth(api.admin_key))
    assert first.status_code == 200
    assert VALUE not in first.text
    page = first.json()
    assert [s["name"] for s in page["secrets"]] == ["a_key", "b_key"]
    assert all(set(s) == METADATA for s in page["secrets"])
    rest = await api.client.get(
        "/v1/secrets", params={"cursor": page["next_cursor"]}, headers=api.auth(api.admin_key)
    )
    assert [s["name"] for s in rest.json()["secrets"]] == ["c_key"]
    assert rest.json()["next_cursor"] is None


async def test_delete_removes_every_version(api: Api) -> None:
    await _store(api, value="one")
    await _store(api, value="two")
    deleted = await api.client.delete("/v1/secrets/stripe_key", headers=api.auth(api.admin_key))
    assert deleted.status_code == 200
    assert deleted.json() == {"name": "stripe_key", "deleted_versions": 2}
    session_id = await _session(api, "read")
    assert (await _release(api, "stripe_key", session_id, version=1)).status_code == 404
    assert (
        await api.client.get("/v1/secrets/stripe_key", headers=api.auth(api.admin_key))
    ).status_code == 404
    assert (await api.client.get("/v1/secrets", headers=api.auth(api.admin_key))).json()["secrets"] == []
    again = await api.client.delete("/v1/secrets/stripe_key", headers=api.auth(api.admin_key))
    assert again.status_code == 404


async def test_the_ledger_records_every_vault_action_with_an_hmac_and_never_the_value(api: Api) -> None:
    await _store(api, scope_required="execute")
    allowed = await _session(api, "execute")
    refused = await _session(api, "read")
    assert (await _release(api, "stripe_key", allowed)).status_code == 200
    assert (await _release(api, "stripe_key", refused)).status_code == 403
    assert (
        await api.client.delete("/v1/secrets/stripe_key", headers=api.auth(api.admin_key))
    ).status_code == 200

    entries = await _vault_entries(api)
    assert [(e["action"], e["status"], e["session_id"]) for e in entries] == [
        ("secret.store", "ok", None),
        ("secret.release", "ok", allowed),
        ("secret.release", "denied", refused),
        ("secret.delete", "ok", None),
    ]
    hmacs = {e["details"]["value_hmac"] for e in entries}
    assert len(hmacs) == 1
    assert len(hmacs.pop()) >= 32
    assert all(e["details"]["name"] == "stripe_key" for e in entries)
    assert VALUE not in json.dumps(entries)
    assert "execute" in entries[2]["details"]["refused"]


async def test_a_replayed_store_answers_the_first_version_and_stores_nothing(api: Api) -> None:
    headers = {**api.auth(api.admin_key), "Idempotency-Key": "store-1"}
    body = {"name": "stripe_key", "value": VALUE}
    first = await api.client.post("/v1/secrets", json=body, headers=headers)
    again = await api.client.post("/v1/secrets", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    info = (await api.client.get("/v1/secrets/stripe_key", headers=api.auth(api.admin_key))).json()
    assert info["versions"] == 1
    other_value = await api.client.post("/v1/secrets", json={**body, "value": "other"}, headers=headers)
    assert other_value.status_code == 422
    assert other_value.json()["code"] == "idempotency_key_reused"


async def test_secrets_of_one_tenant_are_invisible_to_another(api: Api) -> None:
    await _store(api)
    intruder = api.auth(await api.key("*", tenant="intruder"))
    assert (await api.client.get("/v1/secrets/stripe_key", headers=intruder)).status_code == 404
    assert (await api.client.get("/v1/secrets", headers=intruder)).json()["secrets"] == []
    assert (await api.client.delete("/v1/secrets/stripe_key", headers=intruder)).status_code == 404
    theirs = await api.client.post("/v1/secrets", json={"name": "stripe_key", "value": "x"}, headers=intruder)
    assert theirs.json()["version"] == 1
    ours = (await api.client.get("/v1/secrets/stripe_key", headers=api.auth(api.admin_key))).json()
    assert ours["versions"] == 1


async def test_vault_and_payment_routes_check_the_key_scope_and_the_tenant(api: Api) -> None:
    """The walk of tests/http/test_route_scopes.py over the routes whose sample ids `seed` makes."""
    ids = await seed(api.client, api.auth(api.admin_key))
    ours = [(m, p) for (m, p) in SAMPLES if p.startswith(("/v1/secrets", "/v1/payments"))]
    assert len(ours) == 9
    weak = api.auth(await api.key("webhooks:read"))
    intruder = api.auth(await api.key("*", tenant="intruder"))
    for method, path in ours:
        url, body = fill(method, path, ids), body_for(method, path, ids)
        refused = await api.client.request(method, url, json=body, headers=weak)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["required"] == SAMPLES[(method, path)][0]
        if "{" in path or body != body_for(method, path, {}):
            stranger = await api.client.request(method, url, json=body, headers=intruder)
            assert stranger.status_code == 404, (method, path, stranger.text)
    for method, path in ours:
        key = api.auth(await api.key(SAMPLES[(method, path)][0]))
        url, body = fill(method, path, ids), body_for(method, path, ids)
        accepted = await api.client.request(method, url, json=body, headers=key)
        assert accepted.status_code < 400, (method, path, accepted.text)
