"""Gate sessions over HTTP: create, read, list, revoke, check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from haldir.core.keys import Principal
from haldir.governor import Governor
from haldir.http.app import create_app
from haldir.settings import Settings
from tests.conftest import Api

pytestmark = pytest.mark.anyio


async def _create(api: Api, **body: Any) -> dict[str, Any]:
    response = await api.client.post(
        "/v1/sessions", json={"agent_id": "agent-1", **body}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _get(api: Api, session_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/v1/sessions/{session_id}", headers=api.auth(api.admin_key))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _check(api: Api, session_id: str, scope: str) -> dict[str, Any]:
    response = await api.client.post(
        f"/v1/sessions/{session_id}/check", json={"scope": scope}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_created_session_has_the_documented_shape(api: Api) -> None:
    body = await _create(api, scopes=["read", "spend:50"], ttl=600)
    assert set(body) == {"session_id", "agent_id", "scopes", "spend_limit", "ttl", "created_at", "expires_at"}
    assert body["session_id"].startswith("ses_")
    assert body["agent_id"] == "agent-1"
    assert body["scopes"] == ["read", "spend"]
    assert body["spend_limit"] == "50.00"
    assert body["ttl"] == 600
    assert body["created_at"] == "2026-04-05T19:00:00Z"
    assert body["expires_at"] == "2026-04-05T19:10:00Z"


async def test_ttl_defaults_to_an_hour(api: Api) -> None:
    body = await _create(api)
    assert body["ttl"] == 3600
    assert body["expires_at"] == "2026-04-05T20:00:00Z"


async def test_an_explicit_spend_limit_wins_over_a_spend_scope(api: Api) -> None:
    body = await _create(api, scopes=["spend:50"], spend_limit="12.345678")
    assert body["spend_limit"] == "12.345678"
    assert body["scopes"] == ["spend"]


async def test_no_limit_means_no_spending_not_unlimited(api: Api) -> None:
    body = await _create(api, scopes=["spend"])
    detail = await _get(api, body["session_id"])
    assert detail["spend_limit"] == "0.00"
    assert detail["remaining_budget"] == "0.00"


async def test_json_numbers_keep_their_decimal_value(api: Api) -> None:
    body = await _create(api, spend_limit=29.99)
    assert body["spend_limit"] == "29.99"


async def test_session_detail_adds_spend_and_validity(api: Api) -> None:
    created = await _create(api, spend_limit="10")
    detail = await _get(api, created["session_id"])
    assert {k: detail[k] for k in created} == created
    assert detail["spent"] == "0.00"
    assert detail["remaining_budget"] == "10.00"
    assert detail["is_valid"] is True
    assert detail["revoked_at"] is None


async def test_a_session_expires_after_its_ttl(api: Api) -> None:
    created = await _create(api, scopes=["read"], ttl=60)
    api.clock.advance(59)
    assert (await _check(api, created["session_id"], "read"))["allowed"] is True
    api.clock.advance(1)
    assert (await _get(api, created["session_id"]))["is_valid"] is False
    check = await _check(api, created["session_id"], "read")
    assert check["allowed"] is False
    assert "expired" in check["reason"]


async def test_revocation_takes_effect_at_once(api: Api) -> None:
    created = await _create(api, scopes=["read"])
    revoked = await api.client.delete(
        f"/v1/sessions/{created['session_id']}", headers=api.auth(api.admin_key)
    )
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] == "2026-04-05T19:00:00Z"
    assert revoked.json()["is_valid"] is False
    check = await _check(api, created["session_id"], "read")
    assert check == {
        "allowed": False,
        "session_id": created["session_id"],
        "scope": "read",
        "reason": f"session {created['session_id']} was revoked",
    }


async def test_a_broad_scope_grants_its_qualified_forms_but_not_the_reverse(api: Api) -> None:
    broad = await _create(api, scopes=["stripe"])
    narrow = await _create(api, scopes=["stripe:refund"])
    assert (await _check(api, broad["session_id"], "stripe:refund"))["allowed"] is True
    assert (await _check(api, narrow["session_id"], "stripe:refund"))["allowed"] is True
    denied = await _check(api, narrow["session_id"], "stripe")
    assert denied["allowed"] is False
    assert "lacks scope 'stripe'" in denied["reason"]
    assert (await _check(api, narrow["session_id"], "stripe:charge"))["allowed"] is False


@pytest.mark.parametrize(
    ("scopes", "fragment"),
    [
        (["Read"], "malformed scope"),
        (["read:"], "malformed scope"),
        (["spend:abc"], "malformed scope"),
        (["spend:1", "spend:2"], "conflicting spend"),
        (["read:x y"], "bad qualifier"),
    ],
)
async def test_malformed_scopes_are_rejected_at_creation(api: Api, scopes: list[str], fragment: str) -> None:
    response = await api.client.post(
        "/v1/sessions", json={"agent_id": "a", "scopes": scopes}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_scope"
    assert fragment in response.json()["error"]


async def test_any_well_formed_scope_name_is_accepted_by_default(api: Api) -> None:
    body = await _create(api, scopes=["read", "browse", "spend:50", "crm.contacts:export"])
    assert body["scopes"] == ["browse", "crm.contacts:export", "read", "spend"]
    assert body["spend_limit"] == "50.00"
    assert (await _check(api, body["session_id"], "browse:news"))["allowed"] is True
    assert (await _check(api, body["session_id"], "teleport"))["allowed"] is False


async def test_strict_scopes_accept_only_built_in_and_custom_names(store_url: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=store_url, strict_scopes=True, custom_scopes=("stripe",)
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        governor: Governor = app.state.governor
        created = await governor.keys.create_key(Principal.operator("acme"), name="t", scopes=["*"])
        headers = {"Authorization": f"Bearer {created.value.value}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://haldir.test") as client:
            allowed = await client.post(
                "/v1/sessions", json={"agent_id": "a", "scopes": ["read", "stripe:refund"]}, headers=headers
            )
            refused = await client.post(
                "/v1/sessions", json={"agent_id": "a", "scopes": ["read", "browse"]}, headers=headers
            )
    assert allowed.status_code == 201, allowed.text
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_scope"
    assert "unknown scope 'browse'" in refused.json()["error"]
    assert "HALDIR_CUSTOM_SCOPES" in refused.json()["error"]


async def test_checking_a_malformed_scope_is_a_400(api: Api) -> None:
    created = await _create(api)
    response = await api.client.post(
        f"/v1/sessions/{created['session_id']}/check",
        json={"scope": "NOPE!"},
        headers=api.auth(api.admin_key),
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_scope"


@pytest.mark.parametrize(
    "amount",
    ["NaN", "Infinity", "-Infinity", "-1", "0.1234567", "1e-7", "abc", "1000000000.01", True, -0.5],
)
async def test_bad_amounts_are_rejected_with_400(api: Api, amount: Any) -> None:
    response = await api.client.post(
        "/v1/sessions", json={"agent_id": "a", "spend_limit": amount}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] in ("invalid_amount", "invalid_request")


async def test_json_nan_literals_are_rejected_with_400(api: Api) -> None:
    headers = {**api.auth(api.admin_key), "Content-Type": "application/json"}
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        raw = b'{"agent_id": "a", "spend_limit": ' + literal + b"}"
        response = await api.client.post("/v1/sessions", content=raw, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_amount"


@pytest.mark.parametrize("ttl", [0, -5, 30 * 86400 + 1])
async def test_ttl_outside_the_allowed_range_is_rejected(api: Api, ttl: int) -> None:
    response = await api.client.post(
        "/v1/sessions", json={"agent_id": "a", "ttl": ttl}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 400
    assert "ttl" in response.json()["error"]


async def test_listing_filters_and_pages_with_a_cursor(api: Api) -> None:
    ids = []
    for i in range(5):
        ids.append((await _create(api, agent_id="alpha" if i % 2 == 0 else "beta"))["session_id"])
        api.clock.advance(1)
    await api.client.delete(f"/v1/sessions/{ids[0]}", headers=api.auth(api.admin_key))

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "agent_id": "alpha"}
        if cursor:
            params["cursor"] = cursor
        page = (await api.client.get("/v1/sessions", params=params, headers=api.auth(api.admin_key))).json()
        seen += [s["session_id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [ids[4], ids[2], ids[0]]

    active = (
        await api.client.get("/v1/sessions", params={"active": "true"}, headers=api.auth(api.admin_key))
    ).json()
    assert [s["session_id"] for s in active["sessions"]] == [ids[4], ids[3], ids[2], ids[1]]


async def test_a_garbled_cursor_is_a_400(api: Api) -> None:
    response = await api.client.get(
        "/v1/sessions", params={"cursor": "%%%garbage"}, headers=api.auth(api.admin_key)
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


async def test_unknown_sessions_are_404(api: Api) -> None:
    for method, path in (("GET", "/v1/sessions/ses_nope"), ("DELETE", "/v1/sessions/ses_nope")):
        response = await api.client.request(method, path, headers=api.auth(api.admin_key))
        assert response.status_code == 404
        assert "ses_nope" in response.json()["error"]


async def test_checking_spend_with_an_amount_compares_the_remaining_budget(api: Api) -> None:
    funded = await _create(api, scopes=["spend:20"])
    unfunded = await _create(api, scopes=["spend"])
    assert (await _check(api, funded["session_id"], "spend:20"))["allowed"] is True
    over = await _check(api, funded["session_id"], "spend:20.000001")
    assert over["allowed"] is False
    assert "20.00 USD of budget left" in over["reason"]
    assert (await _check(api, unfunded["session_id"], "spend"))["allowed"] is True
    assert (await _check(api, unfunded["session_id"], "spend:10"))["allowed"] is False


async def test_a_scope_and_its_qualified_form_can_be_given_together(api: Api) -> None:
    body = await _create(api, scopes=["stripe:refund", "stripe", "read", "read:x"])
    assert body["scopes"] == ["read", "read:x", "stripe", "stripe:refund"]


async def test_active_false_lists_only_revoked_or_expired_sessions(api: Api) -> None:
    live = await _create(api, ttl=600)
    short = await _create(api, ttl=10)
    gone = await _create(api)
    await api.client.delete(f"/v1/sessions/{gone['session_id']}", headers=api.auth(api.admin_key))
    api.clock.advance(10)
    inactive = await api.client.get(
        "/v1/sessions", params={"active": "false"}, headers=api.auth(api.admin_key)
    )
    assert {s["session_id"] for s in inactive.json()["sessions"]} == {short["session_id"], gone["session_id"]}
    assert live["session_id"] not in inactive.text


async def test_equivalent_bodies_replay_under_one_idempotency_key(api: Api) -> None:
    headers = {**api.auth(api.admin_key), "Idempotency-Key": "same-meaning"}
    first = await api.client.post(
        "/v1/sessions", json={"agent_id": "a", "scopes": ["read", "read"], "spend_limit": 50}, headers=headers
    )
    second = await api.client.post(
        "/v1/sessions", json={"agent_id": "a", "scopes": ["read"], "spend_limit": "50.00"}, headers=headers
    )
    assert second.status_code == 201
    assert second.json() == first.json()
