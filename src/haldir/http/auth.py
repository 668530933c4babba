"""Authentication: the API key from `Authorization: Bearer` or `X-API-Key`, resolved by the governor."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from haldir.core.keys import Principal
from haldir.governor import Governor

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer hld_…`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key: `X-API-Key: hld_…`")


def app_governor(request: Request) -> Governor:
    found: Governor = request.app.state.governor
    return found


async def governor(request: Request) -> Governor:
    # A coroutine on purpose: FastAPI runs a plain `def` dependency on a worker thread, per request.
    return app_governor(request)


async def principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> Principal:
    presented = bearer.credentials if bearer is not None else header
    found = await app_governor(request).keys.authenticate(presented)
    structlog.contextvars.bind_contextvars(tenant_id=found.tenant_id, key=found.key_prefix)
    return found


GovernorDep = Annotated[Governor, Depends(governor)]
PrincipalDep = Annotated[Principal, Depends(principal)]
