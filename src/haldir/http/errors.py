"""The HTTP error envelope `{"error", "code", "request_id"}` and the one place errors become responses."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from haldir.errors import HaldirError
from haldir.http.auth import require_key

log = structlog.get_logger("haldir.http")

_STATUS_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ErrorBody(BaseModel):
    """The error envelope. Some errors add fields (below); a client ignores the ones it does not know."""

    model_config = ConfigDict(extra="allow")
    error: str = Field(description="What failed, got vs expected, and what to do next.")
    code: str = Field(description="The stable machine-readable name; see each status for its codes.")
    request_id: str = Field(description="The request's id, also in the `X-Request-ID` header.")
    problems: list[str] | None = Field(default=None, description="`invalid_request`: one per field.")
    field: str | None = Field(default=None, description="The request field that was refused.")
    required: str | None = Field(default=None, description="`insufficient_scope`: the key scope needed.")
    requested: list[str] | None = Field(default=None, description="A key wider than its maker: its scopes.")
    granted: list[str] | None = Field(default=None, description="`insufficient_scope`: the key's scopes.")
    flag_reason: str | None = Field(default=None, description="A refused governed call: why.")
    policy_id: str | None = Field(default=None, description="The policy that refused a governed call.")
    retry_after: int | None = Field(default=None, description="`rate_limited`: seconds until it reopens.")
    remaining_budget: str | None = Field(default=None, description="`budget_exceeded`: USD left.")
    approval_id: str | None = Field(default=None, description="The approval a refusal or conflict names.")
    approval_status: str | None = Field(default=None, description="That approval's status.")


class ApprovalRequiredBody(ErrorBody):
    """`approval_required` (202): nothing ran; the same request runs once after a person approves it."""

    approval_id: str = Field(description="The approval to decide, `apr_…`.")
    approval_status: str = Field(description="`pending` until decided.")
    expires_at: str = Field(description="When the approval request lapses (ISO 8601).")
    next: str = Field(description="What to do next, in words.")


def error_response(request: Request, *, status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = {"error": message, "code": code, "request_id": request_id(request), **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HaldirError)
    async def _haldir(request: Request, exc: HaldirError) -> JSONResponse:
        return haldir_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI reads and validates the body before the route's dependencies run: the key comes first.
        refused = await _without_key(request)
        if refused is not None:
            return refused
        problems = [_describe(error) for error in exc.errors()]
        if any(error.get("type") == "json_invalid" for error in exc.errors()):
            return _malformed_json(request)
        return error_response(
            request, status=400, code="invalid_request", message="; ".join(problems), problems=problems
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's own: a body it could not read (not UTF-8, not a form)
            return await _without_key(request) or _malformed_json(request)
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        response = error_response(request, status=exc.status_code, code=code, message=str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(allowed_methods(request))
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", error_type=type(exc).__name__)
        return error_response(
            request, status=500, code="internal_error", message="internal error; quote the request_id"
        )


def haldir_response(request: Request, exc: HaldirError) -> JSONResponse:
    if exc.http_status >= 500:
        log.error("request_failed", code=exc.code, error=exc.message)
    response = error_response(
        request, status=exc.http_status, code=exc.code, message=exc.message, **exc.details
    )
    if "retry_after" in exc.details:
        response.headers["Retry-After"] = str(exc.details["retry_after"])
    return response


async def _without_key(request: Request) -> JSONResponse | None:
    """The 401 (or 503) of a request to an authenticated route that has no valid key; None when it has."""
    try:
        await require_key(request)
    except HaldirError as exc:
        return haldir_response(request, exc)
    return None


def _malformed_json(request: Request) -> JSONResponse:
    return error_response(
        request, status=400, code="malformed_json", message="the request body is not valid JSON (UTF-8)"
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method the request's path answers to. Starlette's 405 names those of the first route that
    matched the path alone, and a path's methods are often routes of their own (GET and POST /v1/keys)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return sorted(methods)


def _describe(error: Any) -> str:
    """A field error without echoing the submitted value (it may be a secret)."""
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
    return f"{where}: {error.get('msg', 'invalid')}"


# Every route may answer these with the error envelope; they are listed in its OpenAPI description.
# What a request held for a person's approval answers (`approval_required`): nothing ran.
APPROVAL_RESPONSE: dict[int | str, dict[str, object]] = {
    202: {
        "model": ApprovalRequiredBody,
        "description": "Held for approval (`approval_required`): `approval_id`, `expires_at`, `next`.",
    }
}
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status_code: {"model": ErrorBody}
    for status_code in (400, 401, 402, 403, 404, 409, 413, 422, 429, 502, 503)
}
