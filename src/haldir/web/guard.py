"""Who is at the dashboard and whether a form post may act: the session cookie, the principal of the key
sealed in it, the cross-origin check and the CSRF token. Every page and action depends on one of these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from haldir.core.keys import Principal
from haldir.errors import HaldirError, Unauthenticated
from haldir.governor import Governor
from haldir.proxy.service import ProxyService
from haldir.web.signin import COOKIE, Seal, SignedOut

CSRF_FIELD = "csrf"


class CrossSiteRequest(HaldirError):
    """A form post that did not come from a dashboard page of this server: refused before it acts."""

    code = "csrf_rejected"
    http_status = 403
    exit_code = 4


@dataclass(frozen=True)
class Operator:
    """The signed-in key's principal, and the CSRF token this browser's forms carry."""

    principal: Principal
    csrf: str

    def can(self, scope: str) -> bool:
        """Whether to offer what needs `scope` (the governor still checks it on every call)."""
        return self.principal.holds(scope)


def governor(request: Request) -> Governor:
    found: Governor = request.app.state.host.governor
    return found


def proxy_service(request: Request) -> ProxyService:
    found: ProxyService = request.app.state.host.proxy
    return found


def seal(request: Request) -> Seal:
    """The app's sealer, made on first use from the log signing key the server loaded at start."""
    state = request.app.state
    made: Seal | None = getattr(state, "seal", None)
    if made is None:
        made = state.seal = Seal(state.host.log_signer.skey.encode())
    return made


async def operator(request: Request) -> Operator:
    """The principal of the key in the session cookie, authenticated as the API authenticates a key: a
    revoked key signs the browser out on its next request."""
    gov = governor(request)
    cookie = request.cookies.get(COOKIE)
    sealer = seal(request)
    key = sealer.open(cookie, now=gov.now())
    try:
        principal = await gov.keys.authenticate(key)
    except Unauthenticated:
        raise SignedOut("this API key no longer works (it was revoked?); sign in with another") from None
    assert cookie is not None  # opened above
    return Operator(principal, sealer.csrf_token(cookie))


def require_same_origin(request: Request) -> None:
    """Refuse a post a browser says came from another site.

    1. With `Sec-Fetch-Site` (every current browser sends it), only `same-origin` (or `none`, typed by
       the user) passes.
    2. Without it, an `Origin` header must name this host.
    3. With neither, the sender is not a browser, which cannot be tricked into posting: the CSRF token
       alone decides.
    """
    # Step 1.
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site not in ("same-origin", "none"):
            raise CrossSiteRequest(f"refused a form posted from another site (Sec-Fetch-Site: {site})")
        return
    # Step 2.
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise CrossSiteRequest("refused a form posted from another origin")
    # Step 3: nothing more to check here.


async def acting(request: Request, who: Annotated[Operator, Depends(operator)]) -> Operator:
    """An operator whose form post may act: same origin, and the CSRF token of its own session."""
    require_same_origin(request)
    token = (await request.form()).get(CSRF_FIELD)
    if not seal(request).csrf_matches(request.cookies.get(COOKIE), token if isinstance(token, str) else None):
        raise CrossSiteRequest("the form's CSRF token is missing or stale; reload the page and try again")
    return who


async def _governor(request: Request) -> Governor:
    # A coroutine on purpose: FastAPI runs a plain `def` dependency on a worker thread, per request.
    return governor(request)


async def _proxy_service(request: Request) -> ProxyService:
    return proxy_service(request)


OperatorDep = Annotated[Operator, Depends(operator)]
ActingDep = Annotated[Operator, Depends(acting)]
GovernorDep = Annotated[Governor, Depends(_governor)]
ProxyDep = Annotated[ProxyService, Depends(_proxy_service)]
