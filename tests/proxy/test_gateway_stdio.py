"""`haldir proxy`: the gateway over stdio, started as an MCP client starts it, against a real server."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client.client import Client
from mcp.client.session import IncomingMessage
from mcp.client.stdio import StdioServerParameters
from mcp.shared.subscriptions import ToolsListChanged

from tests.mcp_servers import changing_tools_params, time_server_params
from tests.proxy.conftest import TIMEOUT_S, Tenant
from tests.proxy.test_gateway import CONVERT, OWN_TOOLS, TIME_TOOLS, content, refused, structured
from tests.support import call_outcomes

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

HALDIR = str(Path(sys.executable).parent / "haldir")


def proxy_env(tenant: Tenant, **settings: str) -> dict[str, str]:
    """The environment an MCP client config gives `haldir proxy`: none of this process's HALDIR_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALDIR_")}
    base = {"HALDIR_URL": tenant.live.url, "HALDIR_API_KEY": tenant.key, "HALDIR_LOG_LEVEL": "warning"}
    return env | base | {f"HALDIR_{name.upper()}": value for name, value in settings.items()}


@asynccontextmanager
async def stdio_proxy(
    env: dict[str, str], *, mode: str = "auto", on_message: Any = None
) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=HALDIR, args=["proxy"], env=env)
    with anyio.fail_after(TIMEOUT_S):
        async with Client(params, mode=mode, message_handler=on_message) as client:
            yield client


async def test_haldir_proxy_serves_an_existing_session(tenant: Tenant) -> None:
    await tenant.register("time", time_server_params())
    await tenant.rest.post("/v1/proxy/policies", json={"type": "deny", "tools": ["get_current_time"]})
    session_id = await tenant.session("execute", spend_limit="1")
    direct = await tenant.rest.post(
        "/v1/proxy/call", json={"session_id": session_id, "tool": "convert_time", "arguments": CONVERT}
    )
    async with stdio_proxy(proxy_env(tenant, session_id=session_id)) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TIME_TOOLS | OWN_TOOLS
        converted = await client.call_tool("convert_time", CONVERT)
        denied = await refused(client, "get_current_time", {"timezone": "UTC"})
        spend = await structured(client, "haldir_get_spend", {})
        await tenant.recorded(session_id)
        audit = await structured(client, "haldir_get_audit", {"limit": 10})
    assert not converted.is_error
    assert content(converted) == direct.json()["content"]
    assert denied["code"] == "tool_denied"
    assert denied["request_id"]  # the remote server's error body, as REST answers it
    assert spend["by_session"] == {session_id: "0.00"}
    assert call_outcomes(list(reversed(audit["entries"]))) == [
        ("convert_time", "ok"),
        ("convert_time", "ok"),
        ("get_current_time", "denied"),
    ]


async def test_haldir_proxy_creates_its_session_from_the_agent_settings(tenant: Tenant) -> None:
    await tenant.register("time", time_server_params())
    env = proxy_env(tenant, agent_id="stdio-agent", scopes="read, execute", spend_limit="2.5")
    async with stdio_proxy(env) as client:
        await client.call_tool("get_current_time", {"timezone": "UTC"})
        permission = await structured(client, "haldir_check_permission", {"scope": "read"})
    session = (await tenant.rest.get(f"/v1/sessions/{permission['session_id']}")).json()
    assert permission["allowed"] is True
    assert session["agent_id"] == "stdio-agent"
    assert sorted(session["scopes"]) == ["execute", "read"]
    assert session["spend_limit"] == "2.50"


async def test_with_only_a_url_and_a_key_haldir_proxy_acts_for_an_agent_named_after_the_key(
    tenant: Tenant,
) -> None:
    """The proxy guide's config: HALDIR_URL and HALDIR_API_KEY only."""
    await tenant.register("time", time_server_params())
    keys = (await tenant.rest.get("/v1/keys")).json()["keys"]
    agent_id = f"proxy-{keys[0]['prefix']}"  # the display prefix the server shows for the key
    with anyio.fail_after(TIMEOUT_S):
        done = await anyio.run_process(
            [HALDIR, "proxy"], input=b"", env=proxy_env(tenant, log_level="info"), check=False
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""  # stdout carries MCP only
    logged = [json.loads(line) for line in done.stderr.splitlines() if b"proxy.session_created" in line]
    assert [(line["agent_id"], line["scopes"]) for line in logged] == [(agent_id, ["execute"])]
    async with stdio_proxy(proxy_env(tenant)) as client:
        called = await client.call_tool("get_current_time", {"timezone": "UTC"})
        permission = await structured(client, "haldir_check_permission", {"scope": "execute"})
    session = (await tenant.rest.get(f"/v1/sessions/{permission['session_id']}")).json()
    assert not called.is_error
    assert session["agent_id"] == agent_id
    assert session["scopes"] == ["execute"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_stdio_client_hears_that_the_upstream_tools_changed(tenant: Tenant, mode: str) -> None:
    await tenant.register("changing", changing_tools_params())
    session_id = await tenant.session("execute")
    heard = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            heard.set()

    env = proxy_env(tenant, session_id=session_id, proxy_poll_seconds="0.2")
    async with stdio_proxy(env, mode=mode, on_message=on_message) as client:
        before = {tool.name for tool in (await client.list_tools()).tools}
        if mode == "auto":
            async with client.listen(tools_list_changed=True) as events:
                await client.call_tool("grow", {})
                with anyio.fail_after(TIMEOUT_S):
                    assert await anext(aiter(events)) == ToolsListChanged()
        else:
            await client.call_tool("grow", {})
            with anyio.fail_after(TIMEOUT_S):
                await heard.wait()
        after = {tool.name for tool in (await client.list_tools()).tools}
    assert after - before == {"extra_1"}
