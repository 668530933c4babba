"""Liveness, readiness and health: unauthenticated probes that reveal nothing about tenants."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from haldir import __version__
from haldir.errors import HaldirError
from haldir.store.migrate import head_revision, status

# Public: no key, no input; the OpenAPI document lists what they can answer (haldir.http.openapi).
router = APIRouter(tags=["health"])


class Live(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    store: str
    schema_revision: str | None
    schema_head: str
    version: str
    error: str | None = None


@router.get("/livez", response_model=Live)
async def livez() -> Live:
    return Live(status="ok")


@router.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
async def readyz(request: Request) -> JSONResponse:
    return await _readiness(request)


@router.get("/healthz", response_model=Ready, responses={503: {"model": Ready}})
async def healthz(request: Request) -> JSONResponse:
    return await _readiness(request)


@router.get("/health", response_model=Ready, responses={503: {"model": Ready}})
async def health(request: Request) -> JSONResponse:
    """The same check and body as `/healthz`, at the path the self-hosting guide uses."""
    return await _readiness(request)


async def _readiness(request: Request) -> JSONResponse:
    store = request.app.state.store
    error = None
    current = None
    try:
        current = (await status(store)).current
        if current != head_revision():
            error = "schema is not at the latest migration: run 'haldir migrate up'"
    except HaldirError as exc:
        error = exc.message
    body = Ready(
        status="ok" if error is None else "unavailable",
        store=store.backend,
        schema_revision=current,
        schema_head=head_revision(),
        version=__version__,
        error=error,
    )
    return JSONResponse(body.model_dump(), status_code=200 if error is None else 503)
