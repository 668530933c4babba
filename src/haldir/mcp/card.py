"""The MCP server card (`/.well-known/mcp/server-card.json`, SEP-2127's shape): read from the servers
themselves over the SDK's in-memory transport, so it lists what `tools/list` and `prompts/list` answer."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
from mcp import Client
from mcp.server.lowlevel import Server
from mcp_types.version import SUPPORTED_PROTOCOL_VERSIONS

from haldir import __version__
from haldir.errors import InvalidRequest
from haldir.mcp.backends import Json
from haldir.mcp.gateway import ToolChangeFanout, build_gateway_server
from haldir.mcp.gateway_http import SESSION_HEADER

# The name MCP registries know Haldir by (the product description's `mcp-name`), and its source.
REGISTRY_NAME = "io.github.ExposureGuard/haldir"
REPOSITORY = "https://github.com/ExposureGuard/haldir"
CARD_SCHEMA = "https://static.modelcontextprotocol.io/schemas/v1/server-card.schema.json"
META = "io.github.exposureguard.haldir"  # the prefix of the card's own `_meta` keys
GOVERNANCE_PATH = "/mcp"
GATEWAY_PATH = "/mcp/gateway"
LIST_TIMEOUT_S = 10

# Commands that serve the same servers over stdio (see pyproject's scripts and the CLI).
STDIO = (
    {"type": "stdio", "server": "haldir", "command": "haldir-mcp", "args": []},
    {"type": "stdio", "server": "haldir", "command": "haldir", "args": ["mcp"]},
    {"type": "stdio", "server": "haldir-gateway", "command": "haldir", "args": ["proxy"]},
)
STDIO_ENV = ("HALDIR_URL", "HALDIR_API_KEY")


class _NoUpstreams:
    """A gateway backend of a tenant with no upstream servers: the gateway then lists its own tools alone.
    Nothing is ever called on it but the listing."""

    session_id = ""

    async def list_proxy_tools(self) -> Json:
        return {"tools": []}

    async def call_tool(self, *, session_id: str, tool: str, arguments: dict[str, Any]) -> Json:
        raise InvalidRequest("the server card's gateway calls nothing")

    async def check_permission(self, session_id: str, scope: str) -> Json:
        raise InvalidRequest("the server card's gateway calls nothing")

    async def spend(self, *, session_id: str | None = None) -> Json:
        raise InvalidRequest("the server card's gateway calls nothing")

    async def list_entries(self, *, session_id: str | None = None, limit: int = 50) -> Json:
        raise InvalidRequest("the server card's gateway calls nothing")

    async def get_approval(self, approval_id: str) -> Json:
        raise InvalidRequest("the server card's gateway calls nothing")


def gateway_for_card() -> Server[Any]:
    """The gateway as `/mcp/gateway` builds it, for a tenant without upstreams: what every agent sees
    before a tenant's own upstream tools join the list."""
    return build_gateway_server(lambda ctx: _NoUpstreams(), lambda ctx: "", ToolChangeFanout())


async def describe(server: Server[Any]) -> Json:
    """A server as its clients see it: identity, instructions, capabilities, tools and prompts."""
    with anyio.fail_after(LIST_TIMEOUT_S):
        async with Client(server) as client:
            tools = (await client.list_tools()).tools
            capabilities = client.server_capabilities or types.ServerCapabilities()
            prompts = (await client.list_prompts()).prompts if capabilities.prompts else []
            instructions = client.instructions
    return {
        "name": server.name,
        "title": server.title,
        "version": server.version,
        "instructions": instructions,
        "capabilities": _dump(capabilities),
        "tools": [_dump(tool) for tool in tools],
        "prompts": [_dump(prompt) for prompt in prompts],
    }


async def server_card(governance: Server[Any], gateway: Server[Any], *, base_url: str) -> Json:
    """The card: the governance server (`/mcp`) at the top, the gateway (`/mcp/gateway`) and the stdio
    commands under `_meta`. `base_url` starts every URL."""
    main, proxy = await describe(governance), await describe(gateway)
    return {
        "$schema": CARD_SCHEMA,
        "name": REGISTRY_NAME,
        "version": __version__,
        "title": main["title"],
        "description": main["instructions"],
        "websiteUrl": REPOSITORY,
        "repository": {"url": REPOSITORY, "source": "github"},
        "remotes": [_remote(f"{base_url}{GOVERNANCE_PATH}")],
        "capabilities": main["capabilities"],
        "tools": main["tools"],
        "prompts": main["prompts"],
        "_meta": {
            f"{META}/server": {"name": main["name"], "version": main["version"]},
            f"{META}/transports": [
                {"type": "streamable-http", "server": main["name"], "url": f"{base_url}{GOVERNANCE_PATH}"},
                {"type": "streamable-http", "server": proxy["name"], "url": f"{base_url}{GATEWAY_PATH}"},
                *({**command, "env": list(STDIO_ENV)} for command in STDIO),
            ],
            f"{META}/gateway": {
                **proxy,
                "remotes": [_remote(f"{base_url}{GATEWAY_PATH}", session_header=True)],
                "upstreamTools": "a tenant's upstream tools join this list, each under its own name "
                "(`<upstream>__<tool>` when two upstreams share one)",
            },
        },
    }


def _remote(url: str, *, session_header: bool = False) -> Json:
    headers: list[Json] = [
        {
            "name": "Authorization",
            "description": "`Bearer hld_…`: a Haldir API key (or send it as `X-API-Key`).",
            "isRequired": True,
            "isSecret": True,
        }
    ]
    if session_header:
        headers.append(
            {
                "name": SESSION_HEADER,
                "description": "The agent's session (`ses_…`) every call is governed under.",
                "isRequired": True,
                "isSecret": False,
            }
        )
    return {
        "type": "streamable-http",
        "url": url,
        "supportedProtocolVersions": list(SUPPORTED_PROTOCOL_VERSIONS),
        "headers": headers,
        "authentication": {"required": True, "schemes": ["bearer"]},
    }


def _dump(model: Any) -> Json:
    found: Json = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return found
