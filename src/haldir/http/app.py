"""The composition root of the API server: settings in, ASGI app out."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from haldir import __version__
from haldir.core.clock import Clock
from haldir.errors import HaldirError
from haldir.governor import Governor
from haldir.http.auth import document_security
from haldir.http.discovery import install_discovery
from haldir.http.errors import install_error_handlers
from haldir.http.metrics import Metrics, MetricsMiddleware, metrics_endpoint
from haldir.http.middleware import EdgeMiddleware
from haldir.http.openapi import document_errors
from haldir.http.routes import (
    anomalies,
    approvals,
    audit,
    audit_rules,
    compliance,
    health,
    keys,
    payments,
    proxy,
    secrets,
    sessions,
    tools,
    usage,
    webhooks,
)
from haldir.logging import configure_logging
from haldir.logkey import load_log_signer
from haldir.mcp.gateway import tool_digest
from haldir.mcp.gateway_http import GatewayEndpoint
from haldir.mcp.http import governance_endpoint, mount_mcp, run_mcp
from haldir.proxy.service import ProxyService
from haldir.proxy.upstreams import UpstreamPool
from haldir.runtime import open_runtime
from haldir.settings import Settings
from haldir.web import DASHBOARD_PATH, mount_dashboard
from haldir.webhooks.worker import delivery_worker


async def expire_approvals(governor: Governor, *, every: float = 30.0) -> None:
    """Record approval requests that lapsed as expired, every `every` seconds until cancelled (a request
    read or retried after it lapsed is recorded then; this catches the ones nobody asks about)."""
    log = structlog.get_logger("haldir.approvals")
    while True:
        try:
            expired = await governor.approvals.expire_lapsed()
            if expired:
                log.info("approvals.expired", approvals=expired)
        except HaldirError as exc:
            log.warning("approvals.sweep_failed", code=exc.code)
        await asyncio.sleep(every)


async def sweep_retention(governor: Governor, *, every: float) -> None:
    """Run the retention sweep every `every` seconds until cancelled; when another process or replica
    holds the sweep lock, this one only drops its own expired cached sessions. A round with nothing
    to do costs one indexed DELETE and one indexed SELECT."""
    log = structlog.get_logger("haldir.retention")
    while True:
        await asyncio.sleep(every)  # not at start: N processes starting at once would all try it
        try:
            swept = await governor.retention.sweep()
            if swept.idempotency_keys_deleted or swept.payments_expired:
                log.info(
                    "retention.swept",
                    idempotency_keys_deleted=swept.idempotency_keys_deleted,
                    payments_expired=swept.payments_expired,
                )
        except HaldirError as exc:
            log.warning("retention.sweep_failed", code=exc.code)
        except Exception:  # a failed round must not end the sweeping: the next round tries again
            log.exception("retention.sweep_failed")


def app_from_environment() -> FastAPI:
    """The app of one `haldir serve` worker process: settings from its HALDIR_* environment."""
    settings = Settings()
    configure_logging(level=settings.log_level, json=settings.log_json)
    return create_app(settings)


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """The API. The store opens when the app starts and refuses to serve an out-of-date schema."""
    gateway = GatewayEndpoint(approval_wait=settings.approval_wait_seconds)
    metrics = Metrics() if settings.metrics else None
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
            delivery_worker(settings, runtime, clock=clock) as deliveries,
        ):
            service = ProxyService(runtime.governor, pool)
            if metrics is not None:
                runtime.store.batch_listeners.append(metrics.batch_committed)
                service.decision_listeners.append(metrics.decided)
            service.subscribe(gateway.fanout.changed)
            if runtime.generated_master_key is not None:
                structlog.get_logger("haldir").warning(
                    "vault.master_key_generated",
                    path=runtime.generated_master_key,
                    advice="back this file up: without it no secret can be read",
                )
            app.state.store = runtime.store
            app.state.log_signer = signer  # the dashboard derives its cookie keys from it
            app.state.governor = runtime.governor
            app.state.proxy = service
            gateway.fanout.follow(tool_digest(runtime.governor))
            # What other processes and replicas change reaches this one's caches and gateway clients.
            background = [
                asyncio.create_task(runtime.store.changes.listen(), name="haldir-changes"),
                asyncio.create_task(gateway.fanout.watch(runtime.store.changes.epoch), name="haldir-tools"),
                asyncio.create_task(service.sweep(), name="haldir-sweep"),
                asyncio.create_task(expire_approvals(runtime.governor), name="haldir-approvals"),
                asyncio.create_task(
                    sweep_retention(runtime.governor, every=settings.retention_sweep_seconds),
                    name="haldir-retention",
                ),
                asyncio.create_task(deliveries.run(), name="haldir-webhooks"),
            ]
            # What start-up built lives as long as the process: the collector stops walking it, and walks
            # the rest less often. A full collection over it cost tail latencies of 100+ ms under load.
            gc.freeze()
            gc.set_threshold(50_000, 20, 20)
            try:
                yield
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await service.settled()  # outcomes of answered calls are recorded before the store closes

    app = FastAPI(
        title="Haldir",
        version=__version__,
        summary="Governance for AI agents: sessions, secrets, budgets, policies and a verifiable ledger.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(EdgeMiddleware, form_paths=(DASHBOARD_PATH,))
    if metrics is not None:
        app.add_middleware(MetricsMiddleware, metrics=metrics)
        app.add_route("/metrics", metrics_endpoint(metrics), include_in_schema=False)
    # The routes join the app's own list: FastAPI's included-router wrappers cost more, per request, in
    # route matching than a governed request costs in Haldir (measured: ~200 µs for POST /v1/audit).
    routes = (
        health,
        keys,
        sessions,
        secrets,
        payments,
        audit_rules,
        anomalies,
        audit,
        proxy,
        tools,
        approvals,
        webhooks,
        compliance,
        usage,
    )
    for module in routes:
        app.router.routes.extend(module.router.routes)
    install_discovery(app, public_url=settings.public_url, governance=mcp_endpoints["/mcp"].server)
    mount_mcp(app, mcp_endpoints)
    mount_dashboard(app)
    document_security(app)
    document_errors(app)
    return app
