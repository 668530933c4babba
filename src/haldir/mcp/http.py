"""MCP servers over Streamable HTTP on the API server, behind the same API key authentication as REST.

Every exchange is stateless (one POST, a JSON answer): nothing lives in the process between requests, so
any replica behind a load balancer can answer any request, as for the REST routes.

The SDK's DNS rebinding protection (a Host and Origin allow-list) is off on purpose. It guards local MCP
servers that answer without credentials; here every request must carry an API key in a header, which a
page rebound to this address cannot know, so the check would add nothing but refusals whenever the server
is reached under a name or address the list did not foresee (behind a proxy, on 0.0.0.0). The REST routes
make the same choice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.security.utils import get_authorization_scheme_param
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from haldir.core.clock import Clock
from haldir.core.keys import Principal
from haldir.errors import HaldirError, Unauthenticated
from haldir.governor import Governor
from haldir.http.auth import app_governor
from haldir.http.errors import error_response
from haldir.http.middleware import MAX_BODY_BYTES
from haldir.mcp.backends import GovernanceBackend, LocalBackend
from haldir.mcp.governance import build_governance_server

_PRINCIPAL = "haldir.principal"
_GOVERNOR = "haldir.governor"
_NO_HOST_CHECK = TransportSecuritySettings(enable_dns_rebinding_protection=False)


class McpEndpoint:
    """An ASGI app serving `server` over stateless Streamable HTTP to callers with a valid API key.

    A request without a key, or with a malformed, unknown or revoked one, gets the REST API's `401` error
    body and never reaches the server. Handlers find the caller with `request_principal(ctx)` and the
    governor with `request_governor(ctx)`. Run `running()` in the app's lifespan.
    """

    def __init__(self, server: Server[Any], *, json_response: bool = True) -> None:
        # `json_response=False` answers with an event stream instead, for servers that send notifications.
        self.server = server
        self.manager = StreamableHTTPSessionManager(
            app=server,
            stateless=True,
            json_response=json_response,
            security_settings=_NO_HOST_CHECK,
            max_request_body_size=MAX_BODY_BYTES,
        )

    def admit(self, request: Request) -> None:
        """What else a request needs, checked after its key; raise a `HaldirError` to refuse it."""

    def running(self) -> AbstractAsyncContextManager[None]:
        """The session manager's task group; requests are refused outside it."""
        return self.manager.run()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            gov = app_governor(request)
            principal = await gov.keys.authenticate(_presented_key(request))
            # The per-second limit holds for every request; governed calls check the actions quota.
            await gov.limits.admit_request(principal.tenant_id, records=False)
            self.admit(request)
        except HaldirError as exc:
            response = error_response(
                request, status=exc.http_status, code=exc.code, message=exc.message, **exc.details
            )
            await response(scope, receive, send)
            return
        structlog.contextvars.bind_contextvars(tenant_id=principal.tenant_id, key=principal.key_prefix)
        state = scope.setdefault("state", {})
        state[_PRINCIPAL], state[_GOVERNOR] = principal, gov
        await self.manager.handle_request(scope, receive, send)


def mount_mcp(app: FastAPI, endpoints: Mapping[str, McpEndpoint]) -> None:
    """Serve each endpoint at its path (exactly; no trailing-slash redirect). Stateless exchanges are
    POSTs only: other methods get the API's `405` envelope."""
    for path, endpoint in endpoints.items():
        app.router.routes.append(Route(path, endpoint=endpoint, methods=["POST"], include_in_schema=False))


@asynccontextmanager
async def run_mcp(endpoints: Iterable[McpEndpoint]) -> AsyncIterator[None]:
    """The lifespan hook: every endpoint's session manager runs while the app does."""
    async with AsyncExitStack() as stack:
        for endpoint in endpoints:
            await stack.enter_async_context(endpoint.running())
        yield


def request_principal(ctx: ServerRequestContext[Any, Any]) -> Principal:
    """The caller of an MCP request that came through an `McpEndpoint`."""
    found = _request_state(ctx).get(_PRINCIPAL)
    if not isinstance(found, Principal):
        raise Unauthenticated("this MCP request did not come through Haldir's API key authentication")
    return found


def request_governor(ctx: ServerRequestContext[Any, Any]) -> Governor:
    found = _request_state(ctx).get(_GOVERNOR)
    if not isinstance(found, Governor):
        raise Unauthenticated("this MCP request did not come through Haldir's API key authentication")
    return found


def local_backend(ctx: ServerRequestContext[Any, Any]) -> GovernanceBackend:
    """The governor of this process, acting for the request's API key."""
    return LocalBackend(request_governor(ctx), request_principal(ctx))


def governance_endpoint(*, clock: Clock | None = None) -> McpEndpoint:
    """The governance tools and prompts at `/mcp`, each request served by the local backend."""
    return McpEndpoint(build_governance_server(local_backend, clock=clock))


def _presented_key(request: Request) -> str | None:
    """The API key as the REST routes read it: `Authorization: Bearer …`, else `X-API-Key`."""
    scheme, credentials = get_authorization_scheme_param(request.headers.get("Authorization"))
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return request.headers.get("X-API-Key")


def _request_state(ctx: ServerRequestContext[Any, Any]) -> dict[str, Any]:
    request = ctx.request
    state = request.scope.get("state") if isinstance(request, Request) else None
    return state if isinstance(state, dict) else {}
