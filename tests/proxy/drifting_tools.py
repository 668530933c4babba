"""A tiny stdio MCP server whose `greet` tool changes its definition on request, for pin tests.

Tools: `greet` (answers "hello <name>"; its description carries a revision number) and `drift` (bumps
that revision; with `announce` true it also sends `notifications/tools/list_changed`, or a
`subscriptions/listen` event on 2026-07-28 connections). Run: `python tests/proxy/drifting_tools.py`.
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

NAME_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"name": {"type": "string"}}}
DRIFT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"announce": {"type": "boolean"}}}


def build() -> Server[Any]:
    revision = [1]
    bus = InMemorySubscriptionBus()

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        greet = types.Tool(
            name="greet", description=f"greets, revision {revision[0]}", input_schema=NAME_SCHEMA
        )
        drift = types.Tool(name="drift", description="changes greet", input_schema=DRIFT_SCHEMA)
        return types.ListToolsResult(tools=[greet, drift])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        arguments = params.arguments or {}
        if params.name == "greet":
            return types.CallToolResult(content=[types.TextContent(text=f"hello {arguments.get('name')}")])
        revision[0] += 1
        if arguments.get("announce"):
            if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
                await bus.publish(ToolsListChanged())
            else:
                await ctx.session.send_tool_list_changed()
        return types.CallToolResult(content=[types.TextContent(text=f"revision {revision[0]}")])

    return Server(
        "drifting-tools",
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
