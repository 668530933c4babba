"""Sign-in and sign-out: an API key in, a sealed HttpOnly, SameSite=Strict cookie out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from haldir.errors import Unauthenticated
from haldir.web.guard import ActingDep, CrossSiteRequest, GovernorDep, require_same_origin, seal
from haldir.web.render import page
from haldir.web.signin import COOKIE, LOGIN_COOKIE, SIGNED_IN_FOR, login_nonce

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    return _login_page(request, status=200, message=None)


@router.post("/login")
async def login(
    request: Request,
    gov: GovernorDep,
    api_key: Annotated[str, Form(max_length=200)],
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    require_same_origin(request)
    if not seal(request).csrf_matches(request.cookies.get(LOGIN_COOKIE), csrf):
        raise CrossSiteRequest("the sign-in form is stale; reload the page and sign in again")
    try:
        await gov.keys.authenticate(api_key.strip())
    except Unauthenticated as exc:
        return _login_page(request, status=401, message=f"{exc.message}: check the key and try again")
    cookie = seal(request).seal(api_key.strip(), expires=gov.now() + SIGNED_IN_FOR)
    response = RedirectResponse(f"{_base(request)}/", status_code=303)
    _set_cookie(request, response, COOKIE, cookie, max_age=int(SIGNED_IN_FOR.total_seconds()))
    response.delete_cookie(LOGIN_COOKIE, path=_cookie_path(request))
    return response


@router.post("/logout")
async def logout(request: Request, who: ActingDep) -> Response:
    response = RedirectResponse(f"{_base(request)}/login", status_code=303)
    response.delete_cookie(COOKIE, path=_cookie_path(request))
    return response


def _login_page(request: Request, *, status: int, message: str | None) -> HTMLResponse:
    """The sign-in form, with a fresh nonce cookie that its CSRF token is bound to."""
    nonce = login_nonce()
    response = page(
        request,
        "login.html",
        who=None,
        http_status=status,
        message=message,
        csrf=seal(request).csrf_token(nonce),
    )
    _set_cookie(request, response, LOGIN_COOKIE, nonce, max_age=3600)
    return response


def _set_cookie(request: Request, response: Response, name: str, value: str, *, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=_cookie_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def _cookie_path(request: Request) -> str:
    return _base(request) or "/"
