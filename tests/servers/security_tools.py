"""A small MCP server over Streamable HTTP with the tools the seeds' examples call, in three groups at three
paths so their names never collide behind the proxy: `/security/mcp`, `/data/mcp`, `/comms/mcp`.

Every tool answers deterministic text (`scan_domain` → `scanned example.com: 0 findings`). The dangerous ones
(`delete_database`, `drop_table`, `send_wire_transfer`) exist so that policies have something to refuse.
Run: `python tests/servers/security_tools.py --port 8123`.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from starlette.applications import Starlette
from starlette.routing import Route

Answer = Callable[[dict[str, Any]], str]


def _schema(*names: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string"} for name in names},
        "required": list(names),
    }


# group → tool → (argument names, answer)
GROUPS: dict[str, dict[str, tuple[tuple[str, ...], Answer]]] = {
    "security": {
        "scan_domain": (("domain",), lambda a: f"scanned {a['domain']}: 0 findings"),
        "dns_lookup": (("domain",), lambda a: f"{a['domain']} A 192.0.2.10"),
        "whois_lookup": (("domain",), lambda a: f"{a['domain']} registrar: Example Registrar"),
        "get_headers": (("url",), lambda a: f"{a['url']} server: example"),
        "delete_database": (("name",), lambda a: f"deleted database {a['name']}"),
        "drop_table": (("table",), lambda a: f"dropped table {a['table']}"),
    },
    "data": {
        "query_rows": (("table",), lambda a: f"0 rows in {a['table']}"),
        "export_csv": (("table",), lambda a: f"exported {a['table']}.csv"),
    },
    "comms": {
        "send_email": (("to",), lambda a: f"sent an email to {a['to']}"),
        "send_wire_transfer": (("to", "amount"), lambda a: f"wired {a['amount']} to {a['to']}"),
    },
}


def build(group: str) -> Server[Any]:
    tools = GROUPS[group]

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(name=name, description=f"{group}: {name}", input_schema=_schema(*args))
                for name, (args, _) in tools.items()
            ]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        found = tools.get(params.name)
        arguments = params.arguments or {}
        if found is None or any(name not in arguments for name in found[0]):
            text = f"unknown tool {params.name}" if found is None else f"{params.name} needs {list(found[0])}"
            return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
        answer = found[1](arguments)
        return types.CallToolResult(content=[types.TextContent(type="text", text=answer)])

    return Server(f"{group}-tools", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


def app() -> Starlette:
    """One Starlette app serving every group at `/<group>/mcp`, each with its own session manager."""
    managers = {group: StreamableHTTPSessionManager(app=build(group)) for group in GROUPS}

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for manager in managers.values():
                await stack.enter_async_context(manager.run())
            yield

    routes = [
        Route(f"/{group}/mcp", endpoint=StreamableHTTPASGIApp(manager)) for group, manager in managers.items()
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run(app(), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
