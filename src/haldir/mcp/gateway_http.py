"""The MCP gateway over Streamable HTTP at `/mcp/gateway`: API key auth as REST, the session in
`X-Session-ID`.

Exchanges are stateless, as at `/mcp`, so any replica answers any request. Responses are server-sent
event streams rather than single JSON bodies, so that a 2026-07-28 client's `subscriptions/listen`
stays open and hears `notifications/tools/list_changed`.
"""

from __future__ import annotations

from typing import Any, cast

from mcp.server.context import ServerRequestContext
from starlette.requests import Request

from haldir.errors import InvalidRequest
from haldir.mcp.gateway import ToolChangeFanout, build_gateway_server
from haldir.mcp.gateway_backends import LocalGateway
from haldir.mcp.http import (
    McpEndpoint,
    request_governor,
    request_principal,
)
from haldir.proxy.service import ProxyService

SESSION_HEADER = "X-Session-ID"


class GatewayEndpoint(McpEndpoint):
    """The gateway for callers with a valid API key and an `X-Session-ID`; the app's `ProxyService`
    (`app.state.proxy`) serves every call."""

    def __init__(self, *, approval_wait: float = 0.0) -> None:
        self.fanout = ToolChangeFanout()
        server = build_gateway_server(_backend, _tenant, self.fanout, approval_wait=approval_wait)
        super().__init__(server, json_response=False)

    def admit(self, request: Request) -> None:
        if not 0 < len(request.headers.get(SESSION_HEADER, "")) <= 100:
            raise InvalidRequest(f"the MCP gateway needs the agent's session in the {SESSION_HEADER} header")


def _backend(ctx: ServerRequestContext[Any, Any]) -> LocalGateway:
    principal, governor = request_principal(ctx), request_governor(ctx)  # only GatewayEndpoint calls pass
    request = cast(Request, ctx.request)
    proxy: ProxyService = request.app.state.proxy
    return LocalGateway(governor, proxy, principal, request.headers[SESSION_HEADER])


def _tenant(ctx: ServerRequestContext[Any, Any]) -> str:
    return request_principal(ctx).tenant_id
