"""Every route checks the API key's scope, and refuses tenants that do not own a resource."""

from __future__ import annotations

import pytest

from tests.conftest import Api
from tests.http.routes import AUTHENTICATED, PUBLIC, SAMPLES, api_routes, body_for, fill, seed

pytestmark = pytest.mark.anyio


async def _resources(api: Api) -> dict[str, str]:
    """One of each resource a route can name, owned by the admin's tenant."""
    owner = api.auth(api.admin_key)
    session = await api.client.post("/v1/sessions", json={"agent_id": "a", "scopes": ["read"]}, headers=owner)
    session_id = session.json()["session_id"]
    entry = await api.client.post(
        "/v1/audit", json={"session_id": session_id, "tool": "t", "action": "a"}, headers=owner
    )
    rule = await api.client.post(
        "/v1/audit/rules", json={"type": "tool_match", "pattern": "t"}, headers=owner
    )
    return {
        "session_id": session_id,
        "entry_id": entry.json()["entry_id"],
        "rule_id": rule.json()["rule_id"],
        "prefix": api.admin_key[:12],
        **await seed(api.client, owner),
    }


async def test_every_documented_route_is_public_or_has_a_sample_in_the_walker(api: Api) -> None:
    routes = api_routes(api.app)
    assert ("POST", "/v1/sessions") in routes
    missing = [route for route in routes if route not in PUBLIC | AUTHENTICATED and route not in SAMPLES]
    assert missing == [], "add these routes to tests/http/routes.py SAMPLES with their required scope"


async def test_every_route_refuses_a_key_without_its_scope(api: Api) -> None:
    # A read scope of another resource than the route's: every resource has routes now.
    weak_scopes = ("webhooks:read", "sessions:read")
    weak_keys = {scope: await api.key(scope) for scope in weak_scopes}
    ids = await _resources(api)
    for method, path in SAMPLES:
        required = SAMPLES[(method, path)][0].split()[0]
        scope = next(s for s in weak_scopes if s.split(":")[0] != required.split(":")[0])
        response = await api.client.request(
            method,
            fill(method, path, ids),
            json=body_for(method, path, ids),
            headers=api.auth(weak_keys[scope]),
        )
        assert response.status_code == 403, (method, path, response.text)
        error = response.json()
        assert error["code"] == "insufficient_scope"
        assert error["required"] == required
        assert error["granted"] == [scope]
        assert required in error["error"]
        assert scope in error["error"]


async def test_every_route_accepts_a_key_with_exactly_its_scope(api: Api) -> None:
    ids = await _resources(api)
    for method, path in SAMPLES:
        key = await api.key(*SAMPLES[(method, path)][0].split())
        if "{prefix}" in path:
            ids["prefix"] = key[:12]
        response = await api.client.request(
            method, fill(method, path, ids), json=body_for(method, path, ids), headers=api.auth(key)
        )
        assert response.status_code < 400, (method, path, response.text)


async def test_write_scope_implies_read_but_not_the_reverse(api: Api) -> None:
    writer = await api.key("sessions:write")
    reader = await api.key("sessions:read")
    assert (await api.client.get("/v1/sessions", headers=api.auth(writer))).status_code == 200
    refused = await api.client.post("/v1/sessions", json={"agent_id": "a"}, headers=api.auth(reader))
    assert refused.status_code == 403


async def test_another_tenant_gets_404_for_every_route_that_takes_an_id(api: Api) -> None:
    owner = api.auth(api.admin_key)
    ids = await _resources(api)
    victim_key = await api.key("sessions:read")
    ids["prefix"] = victim_key[:12]
    intruder = api.auth(await api.key("*", tenant="intruder"))

    with_ids = [(m, p) for (m, p) in SAMPLES if "{" in p or body_for(m, p, {}) != body_for(m, p, ids)]
    assert len(with_ids) >= 6, "the walker found too few routes with ids"
    for method, path in with_ids:
        response = await api.client.request(
            method, fill(method, path, ids), json=body_for(method, path, ids), headers=intruder
        )
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "not_found"

    # Nothing was changed by the intruder's attempts, and lists do not leak across tenants.
    still = await api.client.get(f"/v1/sessions/{ids['session_id']}", headers=owner)
    assert still.json()["revoked_at"] is None
    assert (await api.client.get("/v1/sessions", headers=intruder)).json()["sessions"] == []
    assert (await api.client.get("/v1/audit", headers=intruder)).json()["entries"] == []
    assert (await api.client.get("/v1/audit/rules", headers=intruder)).json()["rules"] == []
    owned = (await api.client.get("/v1/audit/rules", headers=owner)).json()["rules"]
    assert ids["rule_id"] in [rule["rule_id"] for rule in owned]
    listed = (await api.client.get("/v1/keys", headers=intruder)).json()["keys"]
    assert all(key["tenant_id"] == "intruder" for key in listed)
    assert (await api.client.get("/v1/sessions", headers=api.auth(victim_key))).status_code == 200


async def test_routes_about_the_key_itself_need_a_valid_key_and_no_scope(api: Api) -> None:
    narrow = await api.key("webhooks:read")
    other = await api.key("sessions:read", tenant="globex")
    for method, path in AUTHENTICATED:
        assert (await api.client.request(method, path)).status_code == 401
        bad = {"Authorization": "Bearer hld_" + "x" * 48}
        assert (await api.client.request(method, path, headers=bad)).status_code == 401
        mine = await api.client.request(method, path, headers=api.auth(narrow))
        assert mine.status_code == 200, mine.text
        assert mine.json() == {"prefix": narrow[:12], "tenant_id": "acme", "scopes": ["webhooks:read"]}
        theirs = await api.client.request(method, path, headers=api.auth(other))
        assert theirs.json() == {"prefix": other[:12], "tenant_id": "globex", "scopes": ["sessions:read"]}
