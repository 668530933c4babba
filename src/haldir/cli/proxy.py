"""`haldir proxy`: the MCP gateway over stdio, for an MCP client that starts it as a command.

It talks to a Haldir server (`HALDIR_URL`, `HALDIR_API_KEY`) and serves the tenant's upstream tools under
one session: `HALDIR_SESSION_ID`, or a session it creates at start from `HALDIR_AGENT_ID` (by default
`proxy-<the key's display prefix>`, e.g. `proxy-hld_Ab3dEf9h`), `HALDIR_SCOPES` and `HALDIR_SPEND_LIMIT`.
Every call goes through the server's pipeline. Standard output carries MCP only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys

import anyio
import httpx
import structlog
from mcp.server.lowlevel import NotificationOptions
from mcp.server.stdio import stdio_server

from haldir.cli.output import AsJson
from haldir.cli.remote import client_settings
from haldir.client import AsyncHaldirClient
from haldir.core.keys import display_prefix
from haldir.logging import configure_logging
from haldir.mcp.gateway import ToolChangeFanout, build_gateway_server
from haldir.mcp.gateway_backends import RemoteGateway
from haldir.settings import ClientSettings, GatewaySettings, Settings

# A tool call waits on its upstream, which the server gives up to 60 s: wait longer than that for the
# server's answer, or a slow call would fail here while the server still runs and records it.
TIMEOUT = httpx.Timeout(30, read=90)
_TENANT = "stdio"  # one client, one key: the fan-out has a single audience

log = structlog.get_logger("haldir.proxy")


def proxy(as_json: AsJson = False) -> None:
    """Serve the MCP gateway on stdin/stdout (configured by HALDIR_* environment variables, or the server and
    key of `haldir login`). Logs go to stderr; with --json, as JSON lines."""
    settings, gateway = Settings(), GatewaySettings()
    configure_logging(level=settings.log_level, json=settings.log_json or as_json, stream=sys.stderr)
    # httpx logs each request at info: every poll of the tools would reach the MCP client's log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    client = client_settings(needs="proxy:write")
    anyio.run(serve, client, gateway, settings.approval_wait_seconds)


async def serve(client: ClientSettings, gateway: GatewaySettings, approval_wait: float = 0.0) -> None:
    async with AsyncHaldirClient(api_key=client.api_key, base_url=client.url, timeout=TIMEOUT) as remote:
        backend = RemoteGateway(remote, await _session_id(remote, gateway, client.api_key or ""))
        fanout = ToolChangeFanout(held_connections=True)
        server = build_gateway_server(
            lambda ctx: backend, lambda ctx: _TENANT, fanout, approval_wait=approval_wait
        )
        options = server.create_initialization_options(NotificationOptions(tools_changed=True))
        async with stdio_server() as (read_stream, write_stream), anyio.create_task_group() as tasks:
            tasks.start_soon(_watch_tools, backend, fanout, gateway.proxy_poll_seconds)
            await server.run(read_stream, write_stream, options)
            tasks.cancel_scope.cancel()


async def _session_id(remote: AsyncHaldirClient, gateway: GatewaySettings, api_key: str) -> str:
    if gateway.session_id:
        session: dict[str, object] = await remote.get_session(gateway.session_id)
        return str(session["session_id"])
    agent_id = gateway.agent_id or default_agent_id(api_key)
    created = await remote.create_session(
        agent_id=agent_id, scopes=list(gateway.scopes), spend_limit=gateway.spend_limit
    )
    log.info(
        "proxy.session_created",
        session_id=created["session_id"],
        agent_id=agent_id,
        agent_from="HALDIR_AGENT_ID" if gateway.agent_id else "the API key's prefix (HALDIR_AGENT_ID unset)",
        scopes=list(gateway.scopes),
    )
    return str(created["session_id"])


def default_agent_id(api_key: str) -> str:
    """The agent of the session created without HALDIR_AGENT_ID: named after the key, by the display prefix
    the server stores and lists for it (`proxy-hld_Ab3dEf9h`), never by any secret part of it."""
    return f"proxy-{display_prefix(api_key)}"


async def _watch_tools(backend: RemoteGateway, fanout: ToolChangeFanout, every: float) -> None:
    """The server's tool list, polled: a change (an upstream's list_changed, a refresh, an approval)
    reaches the client as `notifications/tools/list_changed`."""
    seen: str | None = None
    while True:
        try:
            tools = await backend.list_proxy_tools()
        except Exception as exc:  # the server may be restarting; the next poll will tell
            log.warning("proxy.poll_failed", error=type(exc).__name__)
        else:
            digest = hashlib.sha256(json.dumps(tools, sort_keys=True).encode()).hexdigest()
            if seen is not None and digest != seen:
                await fanout.changed(_TENANT)
            seen = digest
        await anyio.sleep(every)
