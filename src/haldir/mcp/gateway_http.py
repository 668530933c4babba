"""The MCP gateway over Streamable HTTP at `/mcp/gateway`: API key auth as REST, the session in
`X-Session-ID`.

Exchanges are stateless, as at `/mcp`, so any replica answers any request. Responses are server-sent
event streams rather than single JSON bodies, so that a 2026-07-28 client's `subscriptions/listen`
stays open and hears `notifications/tools/list_changed`.
"""

from __future__ import annotations

from typing import Any, cast

from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from haldir.errors import HaldirError, InvalidRequest
from haldir.http.auth import governor as app_governor
from haldir.http.errors import error_response
from haldir.http.middleware import MAX_BODY_BYTES
from haldir.mcp.gateway import ToolChangeFanout, build_gateway_server
from haldir.mcp.gateway_backends import LocalGateway
from haldir.mcp.http import (
    _NO_HOST_CHECK,
    McpEndpoint,
    _presented_key,
    request_governor,
    request_principal,
)
from haldir.proxy.service import ProxyService

SESSION_HEADER = "X-Session-ID"


class GatewayEndpoint(McpEndpoint):
    """The gateway for callers with a valid API key and an `X-Session-ID`; the app's `ProxyService`
    (`app.state.proxy`) serves every call."""

    def __init__(self) -> None:
        self.fanout = ToolChangeFanout()
        server = build_gateway_server(_backend, _tenant, self.fanout)
        self.manager = StreamableHTTPSessionManager(
            app=server,
            stateless=True,
            json_response=False,
            security_settings=_NO_HOST_CHECK,
            max_request_body_size=MAX_BODY_BYTES,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        session_id = request.headers.get(SESSION_HEADER, "")
        if 0 < len(session_id) <= 100:
            await super().__call__(scope, receive, send)
            return
        # Without a session the request is refused either way; the key is judged first, so a caller
        # without a valid key hears 401, as everywhere else, rather than a hint about the header.
        problem: HaldirError
        try:
            await app_governor(request).authenticate(_presented_key(request))
            problem = InvalidRequest(
                f"the MCP gateway needs the agent's session in the {SESSION_HEADER} header"
            )
        except HaldirError as exc:
            problem = exc
        response = error_response(
            request, status=problem.http_status, code=problem.code, message=problem.message, **problem.details
        )
        await response(scope, receive, send)


def _backend(ctx: ServerRequestContext[Any, Any]) -> LocalGateway:
    principal, governor = request_principal(ctx), request_governor(ctx)  # only GatewayEndpoint calls pass
    request = cast(Request, ctx.request)
    proxy: ProxyService = request.app.state.proxy
    return LocalGateway(governor, proxy, principal, request.headers[SESSION_HEADER])


def _tenant(ctx: ServerRequestContext[Any, Any]) -> str:
    return request_principal(ctx).tenant_id
