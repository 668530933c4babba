"""A tiny stdio MCP server whose tool list changes on request, for list_changed tests.

Tools: `grow` adds a tool `extra_<n>` and announces the change (a `notifications/tools/list_changed`
on handshake-era connections, a `subscriptions/listen` event on 2026-07-28 ones); `pid` answers the
server's process id; `crash` exits the process at once. Run: `python tests/servers/changing_tools.py`.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
BASE_TOOLS = ["grow", "pid", "crash"]


def build() -> Server[Any]:
    names = list(BASE_TOOLS)
    bus = InMemorySubscriptionBus()

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=name, description=f"tool {name}", input_schema=EMPTY_SCHEMA) for name in names
            ]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if params.name == "crash":
            os._exit(3)
        if params.name == "pid":
            return types.CallToolResult(content=[types.TextContent(type="text", text=str(os.getpid()))])
        if params.name == "grow":
            names.append(f"extra_{len(names) - len(BASE_TOOLS) + 1}")
            if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
                await bus.publish(ToolsListChanged())
            else:
                await ctx.session.send_tool_list_changed()
            return types.CallToolResult(content=[types.TextContent(type="text", text=names[-1])])
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=f"unknown tool {params.name}")], is_error=True
        )

    return Server(
        "changing-tools",
        version="1.0.0",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_subscriptions_listen=ListenHandler(bus),
    )


async def main() -> None:
    server = build()
    options = server.create_initialization_options(NotificationOptions(tools_changed=True))
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, options)


if __name__ == "__main__":
    anyio.run(main)
