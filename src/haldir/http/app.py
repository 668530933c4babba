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
from haldir.http.routes import audit, audit_rules, health, keys, payments, secrets, sessions
from haldir.logkey import load_log_signer
from haldir.runtime import open_runtime
from haldir.settings import Settings

_ERRORS: dict[int | str, dict[str, object]] = {
    status_code: {"model": ErrorBody} for status_code in (400, 401, 402, 403, 404, 409, 413, 422, 503)
}


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """The API. The store opens when the app starts and refuses to serve an out-of-date schema."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        signer, _ = load_log_signer(settings)
        async with open_runtime(settings, clock=clock, log_signer=signer, vault=True) as runtime:
            if runtime.generated_master_key is not None:
                structlog.get_logger("haldir").warning(
                    "vault.master_key_generated",
                    path=runtime.generated_master_key,
                    advice="back this file up: without it no secret can be read",
                )
            app.state.store = runtime.store
            app.state.governor = runtime.governor
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
    for module in (health, keys, sessions, secrets, payments, audit_rules, audit):
        app.include_router(module.router)
    return app
