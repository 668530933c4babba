"""The dashboard app, mounted at `/ui` of the API server: its pages, static files, headers and error pages."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from haldir.errors import HaldirError
from haldir.web.pages import approvals, audit, overview, proxy, sessions, signin, spend, webhooks
from haldir.web.render import page
from haldir.web.signin import COOKIE, SignedOut

PATH = "/ui"

# Only the package's own files: no inline script or style, no other origin, no framing, forms post here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not `no-referrer`: under it a browser sends `Origin: null` with a same-origin form post, and the
    # cross-origin check could not tell it from a sandboxed attacker's. Other sites still get nothing.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC_CACHE = "public, max-age=3600"

log = structlog.get_logger("haldir.web")


class PageHeaders:
    """Sets the dashboard's security headers on every response (static files may be cached), and answers
    a failure nothing else handled with an error page, once: Starlette's own last resort re-raises, and the
    API's would then try to answer a second time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(f"{scope.get('root_path', '')}/static/")
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in PAGE_HEADERS.items():
                    headers[name] = value
                if static:
                    headers["Cache-Control"] = STATIC_CACHE
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            log.exception("page_error", error_type=type(exc).__name__)
            if started:
                raise
            failed = _error_page(
                Request(scope), 500, "internal error; quote the request id", code="internal_error"
            )
            await failed(scope, receive, send_with_headers)


def dashboard(host: FastAPI) -> FastAPI:
    """The dashboard over `host`'s governor: mount it with `mount_dashboard`."""
    web = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    web.state.host = host.state
    for module in (signin, overview, sessions, audit, spend, approvals, webhooks, proxy):
        web.router.routes.extend(module.router.routes)
    web.mount("/static", StaticFiles(packages=[("haldir.web", "static")]), name="static")
    web.add_middleware(PageHeaders)
    _install_error_pages(web)
    return web


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at `/ui` of `app` (not part of the API: it is not in the OpenAPI document)."""
    app.mount(PATH, dashboard(app))


def _install_error_pages(web: FastAPI) -> None:
    @web.exception_handler(SignedOut)
    async def _signed_out(request: Request, exc: SignedOut) -> Response:
        base = request.scope.get("root_path", "")
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.delete_cookie(COOKIE, path=base or "/")
        return response

    @web.exception_handler(HaldirError)
    async def _refused(request: Request, exc: HaldirError) -> HTMLResponse:
        if exc.http_status >= 500:
            log.error("page_failed", code=exc.code, error=exc.message)
        return _error_page(request, exc.http_status, exc.message, code=exc.code)

    @web.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> HTMLResponse:
        # Name the field and what is wrong, never echo the value (a sign-in form carries a key).
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'form'}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        ]
        return _error_page(request, 400, "; ".join(problems), code="invalid_request")

    @web.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_page(request, exc.status_code, str(exc.detail), code=code)


def _error_page(request: Request, status: int, message: str, *, code: str) -> HTMLResponse:
    request_id = str(request.scope.get("state", {}).get("request_id", ""))
    return page(
        request, "error.html", who=None, http_status=status, message=message, code=code, request_id=request_id
    )
