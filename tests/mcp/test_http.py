"""`/mcp` on the API server: Streamable HTTP behind the REST API's key authentication."""

from __future__ import annotations

import json

import httpx
import httpx2
import pytest

from haldir.core.keys import Principal
from tests.conftest import Api
from tests.mcp.conftest import Running
from tests.mcp.support import TOOL_NAMES, call, http_client, prompt_text, refused

pytestmark = pytest.mark.anyio

LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def _in_process(api: Api) -> httpx2.ASGITransport:
    return httpx2.ASGITransport(app=api.app)


async def test_mcp_without_a_key_answers_401_in_the_rest_error_envelope(api: Api) -> None:
    missing = await api.client.post("/mcp", json=LIST_TOOLS)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["code"] == "unauthenticated"
    assert missing.json()["request_id"] == missing.headers["X-Request-ID"]
    unknown = await api.client.post("/mcp", json=LIST_TOOLS, headers={"X-API-Key": "hld_" + "x" * 48})
    assert unknown.status_code == 401
    assert unknown.json()["code"] == "invalid_api_key"


async def test_a_revoked_key_is_refused_at_once(api: Api) -> None:
    key = await api.key("sessions:read")
    async with http_client("http://haldir.test/mcp", api.auth(key), transport=_in_process(api)) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOL_NAMES
    await api.client.delete(f"/v1/keys/{key[:12]}", headers=api.auth(api.admin_key))
    refused_key = await api.client.post("/mcp", json=LIST_TOOLS, headers=api.auth(key))
    assert refused_key.status_code == 401
    assert refused_key.json()["code"] == "invalid_api_key"


async def test_only_post_is_served(api: Api) -> None:
    response = await api.client.get("/mcp", headers=api.auth(api.admin_key))
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_over_http_act_for_the_requests_key_and_tenant(api: Api, mode: str) -> None:
    narrow = await api.key("sessions:write", "audit:read", "audit:write")
    headers = {"X-API-Key": narrow}
    async with http_client(
        "http://haldir.test/mcp", headers, transport=_in_process(api), mode=mode
    ) as client:
        sid = (await call(client, "createSession", agent_id="a", scopes=["read"]))["session_id"]
        logged = await call(client, "logAction", session_id=sid, tool="search", action="query")
        trail = await call(client, "getAuditTrail", session_id=sid)
        denied = await refused(client, "getSecret", name="anything", session_id=sid)
        assert "Security review" in await prompt_text(client, "security-audit", session_id=sid)
    assert [entry["entry_id"] for entry in trail["entries"]] == [logged["entry_id"]]
    assert trail["entries"][0]["tenant_id"] == "acme"
    assert denied["code"] == "insufficient_scope"
    assert denied["required"] == "vault:read"
    other_tenant = await api.key("*", tenant="globex")
    async with http_client(
        "http://haldir.test/mcp", api.auth(other_tenant), transport=_in_process(api)
    ) as client:
        assert (await refused(client, "getSession", session_id=sid))["code"] == "not_found"


@pytest.mark.e2e
async def test_a_real_server_serves_mcp_at_slash_mcp(running: Running) -> None:
    url = f"{running.url}/mcp"
    async with httpx.AsyncClient(timeout=30) as raw:
        missing = await raw.post(url, json=LIST_TOOLS)
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthenticated"
    async with http_client(url, {"Authorization": f"Bearer {running.admin_key}"}) as client:
        sid = (await call(client, "createSession", agent_id="e2e", scopes=["spend"], spend_limit="3"))[
            "session_id"
        ]
        await call(client, "authorizePayment", session_id=sid, amount="2")
        over = await refused(client, "authorizePayment", session_id=sid, amount="2")
        logged = await call(client, "logAction", session_id=sid, tool="tool", action="act", details={"k": 1})
        trail = await call(client, "getAuditTrail", session_id=sid)
        spend = await call(client, "getSpend", session_id=sid)
    assert over["code"] == "budget_exceeded"
    assert over["remaining_budget"] == "1.00"
    assert trail["entries"][0]["entry_id"] == logged["entry_id"]
    assert [entry["status"] for entry in trail["entries"]] == ["ok", "denied", "ok"]
    assert spend["total_usd"] == "2.00"
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as rest:
        listed = await rest.get(f"/v1/audit?session_id={sid}", headers={"X-API-Key": running.admin_key})
    assert json.loads(listed.text) == trail


async def test_mcp_tools_that_record_new_actions_keep_to_the_tenants_actions_quota(api: Api) -> None:
    async with http_client(
        "http://haldir.test/mcp", api.auth(api.admin_key), transport=_in_process(api)
    ) as client:
        sid = (await call(client, "createSession", agent_id="a", scopes=["read"]))["session_id"]
        size = await api.app.state.store.ledger.size("acme")
        await api.governor.limits.set_quota(Principal.operator("acme"), actions_per_month=size + 2)
        await call(client, "logAction", session_id=sid, tool="search", action="query")  # the last one allowed
        body = await refused(client, "logAction", session_id=sid, tool="search", action="query")
        assert body["code"] == "quota_exceeded"
        assert body["quota"] == "actions_per_month"
        assert await api.app.state.store.ledger.size("acme") == size + 2
        trail = await call(client, "getAuditTrail", session_id=sid)  # reads go on
        assert len(trail["entries"]) == 1
