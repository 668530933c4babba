"""Helpers for the MCP tests: an SDK client on the governance server, and tool calls that say what failed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from haldir.mcp import LocalBackend, build_governance_server
from tests.conftest import Api

TIMEOUT_S = 30

TOOL_NAMES = {
    "createSession",
    "getSession",
    "revokeSession",
    "checkPermission",
    "storeSecret",
    "getSecret",
    "authorizePayment",
    "logAction",
    "getAuditTrail",
    "getSpend",
    "requestApproval",
    "getApproval",
}


@asynccontextmanager
async def governance_client(api: Api, key: str, *, mode: str = "auto") -> AsyncIterator[Client]:
    """The official SDK's client on the governance server in this process, acting for `key`."""
    principal = await api.governor.keys.authenticate(key)
    server = build_governance_server(lambda ctx: LocalBackend(api.governor, principal), clock=api.clock)
    with anyio.fail_after(TIMEOUT_S):
        async with Client(server, mode=mode) as client:
            yield client


@asynccontextmanager
async def http_client(
    url: str,
    headers: dict[str, str],
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    mode: str = "auto",
) -> AsyncIterator[Client]:
    """The SDK's client on an MCP endpoint over Streamable HTTP, sending `headers` (the API key) each time."""
    http = httpx2.AsyncClient(headers=headers, transport=transport, timeout=TIMEOUT_S)
    with anyio.fail_after(TIMEOUT_S):
        async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


async def call(client: Client, tool: str, /, **arguments: Any) -> dict[str, Any]:
    """The structured result of a tool call that must succeed."""
    with anyio.fail_after(TIMEOUT_S):
        result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} failed: {result.content}"
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def refused(client: Client, tool: str, /, **arguments: Any) -> dict[str, Any]:
    """The structured error of a tool call that must fail, after checking its text names the code."""
    with anyio.fail_after(TIMEOUT_S):
        result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} succeeded: {result.structured_content}"
    body = result.structured_content
    assert isinstance(body, dict)
    text = result.content[0].text  # type: ignore[union-attr]
    assert text == f"{body['code']}: {body['error']}"
    return body


async def prompt_text(client: Client, name: str, /, **arguments: str) -> str:
    with anyio.fail_after(TIMEOUT_S):
        result = await client.get_prompt(name, arguments)
    assert len(result.messages) == 1
    text = result.messages[0].content.text  # type: ignore[union-attr]
    assert isinstance(text, str)
    return text
