"""Edge middleware (pure ASGI): request ids, security headers, body size limit, one access log line."""

from __future__ import annotations

import json
import re
import time

import structlog
from fastapi import HTTPException
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from haldir.core.ids import random_token

MAX_BODY_BYTES = 1024 * 1024
AFTER_RESPONSE = "haldir.after_response"  # scope state: callables to run once the request is over

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
}

_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
log = structlog.get_logger("haldir.http")


class BodyTooLarge(HTTPException):
    """Raised while the body streams in; an HTTPException so that FastAPI's body parser lets it through."""

    def __init__(self, limit: int = MAX_BODY_BYTES) -> None:
        super().__init__(status_code=413, detail=f"request body is larger than {limit} bytes")


class EdgeMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int = MAX_BODY_BYTES, form_paths: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.form_paths = form_paths  # path prefixes whose forms post url-encoded bodies (the dashboard)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        try:
            if _declared_length(scope) > self.max_body_bytes:
                raise BodyTooLarge(self.max_body_bytes)
            if not _json_body(scope) and not _form_body(scope, self.form_paths):
                await _reject(
                    send_with_headers,
                    request_id,
                    status=415,
                    code="unsupported_media_type",
                    message="request bodies are JSON: send 'Content-Type: application/json'",
                )
                return
            await self.app(scope, _limited(receive, self.max_body_bytes), send_with_headers)
        except BodyTooLarge:
            if response_started:
                raise
            message = f"request body is larger than {self.max_body_bytes} bytes"
            await _reject(
                send_with_headers, request_id, status=413, code="payload_too_large", message=message
            )
        finally:
            for after in scope["state"].pop(AFTER_RESPONSE, ()):
                after()
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            structlog.contextvars.clear_contextvars()


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _CLIENT_REQUEST_ID.fullmatch(text):
                return text
    return f"req_{random_token(20)}"


def _json_body(scope: Scope) -> bool:
    """Whether a request's body, if any, is JSON. A body without a Content-Type is taken as JSON."""
    if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
        return True
    headers: dict[bytes, bytes] = dict(scope["headers"])
    declared = headers.get(b"content-type")
    if declared is None:
        scope["headers"] = [*scope["headers"], (b"content-type", b"application/json")]
        return True
    media = declared.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


def _form_body(scope: Scope, prefixes: tuple[str, ...]) -> bool:
    """Whether a request posts a url-encoded form under one of `prefixes`."""
    path: str = scope["path"]
    if not any(path == prefix or path.startswith(f"{prefix}/") for prefix in prefixes):
        return False
    headers: dict[bytes, bytes] = dict(scope["headers"])
    media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    return media == b"application/x-www-form-urlencoded"


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return wrapped


async def _reject(send: Send, request_id: str, *, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": message, "code": code, "request_id": request_id}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
