"""The composition root of the API server: settings in, ASGI app out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from haldir import __version__
from haldir.core.clock import Clock
from haldir.http.errors import ErrorBody, install_error_handlers
from haldir.http.middleware import EdgeMiddleware
from haldir.http.routes import audit, audit_rules, health, keys, payments, proxy, secrets, sessions
from haldir.logkey import load_log_signer
from haldir.mcp.gateway_http import GatewayEndpoint
from haldir.mcp.http import governance_endpoint, mount_mcp, run_mcp
from haldir.proxy.service import ProxyService
from haldir.proxy.upstreams import UpstreamPool
from haldir.runtime import open_runtime
from haldir.settings import Settings

_ERRORS: dict[int | str, dict[str, object]] = {
    status_code: {"model": ErrorBody}
    for status_code in (400, 401, 402, 403, 404, 409, 413, 422, 429, 502, 503)
}


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """The API. The store opens when the app starts and refuses to serve an out-of-date schema."""
    gateway = GatewayEndpoint()
    mcp_endpoints = {"/mcp": governance_endpoint(clock=clock), "/mcp/gateway": gateway}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        signer, _ = load_log_signer(settings)
        service: ProxyService | None = None

        async def upstream_changed(tenant_id: str, name: str) -> None:
            if service is not None:
                await service.upstream_tools_changed(tenant_id, name)

        async with (
            open_runtime(settings, clock=clock, log_signer=signer, vault=True) as runtime,
            UpstreamPool(outbound_allow=settings.outbound_allow, on_tools_changed=upstream_changed) as pool,
            run_mcp(mcp_endpoints.values()),
        ):
            service = ProxyService(runtime.governor, pool)
            service.subscribe(gateway.fanout.changed)
            if runtime.generated_master_key is not None:
                structlog.get_logger("haldir").warning(
                    "vault.master_key_generated",
                    path=runtime.generated_master_key,
                    advice="back this file up: without it no secret can be read",
                )
            app.state.store = runtime.store
            app.state.governor = runtime.governor
            app.state.proxy = service
            yield

    app = FastAPI(
        title="Haldir",
        version=__version__,
        summary="Governance for AI agents: sessions, secrets, budgets, policies and a verifiable ledger.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        responses=_ERRORS,
    )
    install_error_handlers(app)
    app.add_middleware(EdgeMiddleware)
    for module in (health, keys, sessions, secrets, payments, audit_rules, audit, proxy):
        app.include_router(module.router)
    mount_mcp(app, mcp_endpoints)
    return app
