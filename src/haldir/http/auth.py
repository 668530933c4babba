"""Authentication: the API key from `Authorization: Bearer` or `X-API-Key`, resolved by the governor."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, TypeGuard

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer
from fastapi.security.base import SecurityBase
from fastapi.security.utils import get_authorization_scheme_param

from haldir.core.keys import Principal
from haldir.governor import Governor
from haldir.http.middleware import AFTER_RESPONSE

# The two ways to present a key, as the OpenAPI document declares them (see `document_security`).
SCHEMES: tuple[SecurityBase, ...] = (
    HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer hld_…`"),
    APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key: `X-API-Key: hld_…`"),
)


def app_governor(request: Request) -> Governor:
    found: Governor = request.app.state.governor
    return found


async def governor(request: Request) -> Governor:
    # A coroutine on purpose: FastAPI runs a plain `def` dependency on a worker thread, per request.
    return app_governor(request)


def presented_key(request: Request) -> str | None:
    """The key in `Authorization: Bearer …`, else in `X-API-Key` (read as FastAPI's HTTPBearer and
    APIKeyHeader read them)."""
    scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return request.headers.get("x-api-key")


async def principal(request: Request) -> Principal:
    # The headers are read here rather than through the two schemes as sub-dependencies: FastAPI solves
    # each dependency per request, and two more cost a tenth of a cached governed request.
    gov = app_governor(request)
    found = await gov.keys.authenticate(presented_key(request))
    structlog.contextvars.bind_contextvars(tenant_id=found.tenant_id, key=found.key_prefix)
    release = await gov.limits.admit_request(
        found.tenant_id, records=records_actions(request.method, request.url.path)
    )
    if release is not None:  # the edge middleware releases the action's place once the response is sent
        request.scope.setdefault("state", {}).setdefault(AFTER_RESPONSE, []).append(release)
    return found


# Requests the actions quota lets through here: those that settle what was already admitted (a local
# call's outcome, a payment's capture or void, an approval's decision), so nothing admitted is left
# half-recorded; and governed calls (a local call's begin, a proxied call), which the proxy checks itself
# as it does for MCP calls: checking here too would count each of them twice.
_SETTLES = re.compile(
    r"/v1/(tools/calls/[^/]+/finish|tools/[^/]+/begin|proxy/call"
    r"|payments/[^/]+/(capture|void)|approvals/[^/]+/(approve|deny))"
)


def records_actions(method: str, path: str) -> bool:
    """Whether a request would record new actions in the ledger, which the actions quota refuses once
    it is used up: a POST, PUT or PATCH, unless it settles something already admitted. Reads (GET) and
    deletions and revocations (DELETE, which shrink what the tenant holds) always go through."""
    return method in ("POST", "PUT", "PATCH") and _SETTLES.fullmatch(path) is None


GovernorDep = Annotated[Governor, Depends(governor)]
PrincipalDep = Annotated[Principal, Depends(principal)]


def document_security(app: FastAPI) -> None:
    """Declare `SCHEMES` in the app's OpenAPI document, on every operation that authenticates."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        built = app.openapi_schema is not None
        schema = build()  # FastAPI builds the document once and keeps it in app.openapi_schema
        if not built:
            schema.setdefault("components", {})["securitySchemes"] = {
                scheme.scheme_name: jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
                for scheme in SCHEMES
            }
            requirement: list[dict[str, list[str]]] = [{scheme.scheme_name: []} for scheme in SCHEMES]
            for route in app.routes:
                if authenticates(route):
                    for method in route.methods or ():
                        schema["paths"][route.path_format][method.lower()]["security"] = requirement
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def authenticates(route: object) -> TypeGuard[APIRoute]:
    """Whether a route asks for a key (depends on `principal`)."""
    return isinstance(route, APIRoute) and principal in _calls(route.dependant)


async def require_key(request: Request) -> None:
    """Raise as `principal` would when the request's route asks for a key and the request has no valid
    one: for errors found before the route's dependencies ran (its body), so that a caller without a key
    learns only that it needs one."""
    if authenticates(request.scope.get("route")):
        await app_governor(request).keys.authenticate(presented_key(request))


def _calls(dependant: Dependant) -> Iterator[object]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)
