"""The MCP gateway at `/mcp/gateway` of a real `haldir serve`, through the official SDK client, in front of
real upstream MCP servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.subscriptions import ToolsListChanged
from mcp_types import SERVER_INFO_META_KEY

from tests.mcp_servers import changing_tools_params, time_server_params
from tests.proxy.conftest import TIMEOUT_S, Tenant, drifting_tools_params
from tests.support import admitted_calls, call_outcomes

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

OWN_TOOLS = {"haldir_check_permission", "haldir_get_spend", "haldir_get_audit", "haldir_get_approval"}
TIME_TOOLS = {"get_current_time", "convert_time"}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
CONVERT = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Europe/Paris"}


@asynccontextmanager
async def gateway(tenant: Tenant, session_id: str, *, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK's client on the gateway, with the tenant's key and the agent's session in headers."""
    http = create_mcp_http_client(headers={**tenant.auth, "X-Session-ID": session_id})
    transport = streamable_http_client(f"{tenant.live.url}/mcp/gateway", http_client=http)
    with anyio.fail_after(TIMEOUT_S):
        async with http, Client(transport, mode=mode) as client:
            yield client


async def structured(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The structured result of one of the gateway's own tools, which must succeed."""
    with anyio.fail_after(TIMEOUT_S):
        result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def refused(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The error body of a call the gateway must refuse, after checking its text starts with the code."""
    with anyio.fail_after(TIMEOUT_S):
        result = await client.call_tool(tool, arguments)
    assert result.is_error, result.content
    body = result.structured_content
    assert isinstance(body, dict)
    assert result.content[0].text == f"{body['code']}: {body['error']}"  # type: ignore[union-attr]
    return body


def content(result: Any) -> list[dict[str, Any]]:
    return [part.model_dump(mode="json", by_alias=True, exclude_none=True) for part in result.content]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_gateway_serves_upstream_tools_and_its_own_for_one_session(
    tenant: Tenant, mode: str
) -> None:
    await tenant.register("time", time_server_params())
    session_id = await tenant.session("execute", "read", spend_limit="5")
    direct = await tenant.rest.post(
        "/v1/proxy/call", json={"session_id": session_id, "tool": "convert_time", "arguments": CONVERT}
    )
    assert direct.status_code == 200, direct.text
    async with gateway(tenant, session_id, mode=mode) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TIME_TOOLS | OWN_TOOLS
        with anyio.fail_after(TIMEOUT_S):
            result = await client.call_tool("convert_time", CONVERT)
        assert not result.is_error
        assert content(result) == direct.json()["content"]
        assert direct.json()["_meta"][SERVER_INFO_META_KEY]["name"] == "mcp-time"
        stamp = (result.meta or {}).get(SERVER_INFO_META_KEY)  # the gateway's own, never the upstream's
        assert (stamp or {}).get("name") == (None if mode == "legacy" else "haldir-gateway")
        allowed = await structured(client, "haldir_check_permission", {"scope": "read"})
        lacking = await structured(client, "haldir_check_permission", {"scope": "spend"})
        spend = await structured(client, "haldir_get_spend", {})
        recorded = await tenant.recorded(session_id)
        audit = await structured(client, "haldir_get_audit", {"limit": 5})
        bad_arguments = await refused(client, "haldir_get_audit", {"limit": 0})
    assert allowed == {"allowed": True, "session_id": session_id, "scope": "read", "reason": None}
    assert lacking["allowed"] is False
    assert "spend" in lacking["reason"]
    assert spend["by_session"] == {session_id: "0.00"}
    assert spend["by_tool"] == {"convert_time": "0.00"}
    calls = [entry for entry in reversed(audit["entries"]) if entry["action"] == "tools/call"]
    assert calls == [entry for entry in recorded if entry["action"] == "tools/call"]
    assert call_outcomes(calls) == [("convert_time", "ok")] * 2
    assert {entry["session_id"] for entry in calls} == {session_id}
    assert len(admitted_calls(calls)) == 2
    assert bad_arguments["code"] == "invalid_request"


async def test_a_refused_call_is_a_tool_error_that_starts_with_its_code(tenant: Tenant) -> None:
    await tenant.register("time", time_server_params())
    policy = await tenant.rest.post("/v1/proxy/policies", json={"type": "deny", "tools": ["convert_time"]})
    assert policy.status_code == 201, policy.text
    rate = {"type": "rate_limit", "max_calls": 1, "window_seconds": 3600}
    assert (await tenant.rest.post("/v1/proxy/policies", json=rate)).status_code == 201
    session_id = await tenant.session("execute")
    narrow = await tenant.session("read")
    async with gateway(tenant, session_id) as client:
        denied = await refused(client, "convert_time", CONVERT)
        unknown = await refused(client, "no_such_tool", {})
        assert not (await client.call_tool("get_current_time", {"timezone": "UTC"})).is_error
        limited = await refused(client, "get_current_time", {"timezone": "UTC"})
        await tenant.recorded(session_id)
        audit = await structured(client, "haldir_get_audit", {})
    async with gateway(tenant, narrow) as client:
        not_allowed = await refused(client, "get_current_time", {"timezone": "UTC"})
    async with gateway(tenant, "ses_doesnotexist") as client:
        no_session = await refused(client, "get_current_time", {"timezone": "UTC"})
    assert denied["code"] == "tool_denied"
    assert denied["policy_id"] == policy.json()["policy_id"]
    assert "deny list" in denied["flag_reason"]
    assert unknown["code"] == "not_found"
    assert not_allowed["code"] == "not_allowed"
    assert no_session["code"] == "not_found"
    assert limited["code"] == "rate_limited"
    assert 1 <= limited["retry_after"] <= 3600
    assert call_outcomes(list(reversed(audit["entries"]))) == [
        ("convert_time", "denied"),
        ("no_such_tool", "denied"),
        ("get_current_time", "ok"),
        ("get_current_time", "denied"),
    ]


async def test_the_gateway_refuses_requests_without_a_key_or_a_session(tenant: Tenant) -> None:
    url = f"{tenant.live.url}/mcp/gateway"
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as raw:
        no_key = await raw.post(url, json=LIST_TOOLS, headers={**headers, "X-Session-ID": "ses_x"})
        no_key_nor_session = await raw.post(url, json=LIST_TOOLS, headers=headers)
        no_session = await raw.post(url, json=LIST_TOOLS, headers={**headers, **tenant.auth})
    assert no_key.status_code == 401
    assert no_key.json()["code"] == "unauthenticated"
    assert no_key_nor_session.status_code == 401
    assert no_session.status_code == 400
    assert no_session.json()["code"] == "invalid_request"
    assert "X-Session-ID" in no_session.json()["error"]


async def test_a_listening_client_hears_that_an_upstream_announced_new_tools(tenant: Tenant) -> None:
    await tenant.register("changing", changing_tools_params())
    session_id = await tenant.session("execute")
    async with gateway(tenant, session_id) as client, client.listen(tools_list_changed=True) as events:
        with anyio.fail_after(TIMEOUT_S):
            grown = await client.call_tool("grow", {})
            assert content(grown) == [{"type": "text", "text": "extra_1"}]
            assert await anext(aiter(events)) == ToolsListChanged()
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert names == {"grow", "pid", "crash", "extra_1"} | OWN_TOOLS


async def test_a_refresh_that_finds_a_changed_definition_is_heard_and_calls_wait_for_approval(
    tenant: Tenant,
) -> None:
    await tenant.register("drifting", drifting_tools_params())
    session_id = await tenant.session("execute")
    async with gateway(tenant, session_id) as client:
        assert content(await client.call_tool("greet", {"name": "ann"})) == [
            {"type": "text", "text": "hello ann"}
        ]
        async with client.listen(tools_list_changed=True) as events:
            await client.call_tool("drift", {"announce": False})  # the upstream says nothing
            refreshed = await tenant.rest.post("/v1/proxy/upstreams/drifting/refresh")
            assert refreshed.json()["changed"] == ["greet"]
            with anyio.fail_after(TIMEOUT_S):
                assert await anext(aiter(events)) == ToolsListChanged()
            changed = await refused(client, "greet", {"name": "ann"})
            approved = await tenant.rest.post("/v1/proxy/tools/greet/approve")
            assert approved.status_code == 200, approved.text
            with anyio.fail_after(TIMEOUT_S):
                assert await anext(aiter(events)) == ToolsListChanged()
        again = await client.call_tool("greet", {"name": "ann"})
        greet = next(tool for tool in (await client.list_tools()).tools if tool.name == "greet")
    assert changed["code"] == "tool_definition_changed"
    assert not again.is_error
    assert greet.description == "greets, revision 2"
