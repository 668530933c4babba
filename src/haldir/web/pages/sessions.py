"""Sessions: the tenant's agent sessions, one session's detail, and revoking it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from haldir.web.guard import ActingDep, GovernorDep, OperatorDep
from haldir.web.render import page

router = APIRouter()
PAGE_SIZE = 50


@router.get("/sessions", response_class=HTMLResponse)
async def list_sessions(
    request: Request,
    gov: GovernorDep,
    who: OperatorDep,
    agent_id: Annotated[str, Query(max_length=200)] = "",
    show: Literal["active", "all"] = "active",
    cursor: Annotated[str, Query(max_length=512)] = "",
) -> HTMLResponse:
    listed = await gov.sessions.list_sessions(
        who.principal,
        agent_id=agent_id or None,
        active=True if show == "active" else None,
        limit=PAGE_SIZE,
        cursor=cursor or None,
    )
    return page(request, "sessions.html", who=who, page=listed, now=gov.now(), agent_id=agent_id, show=show)


@router.get("/sessions/{session_id}", response_class=HTMLResponse)
async def show_session(request: Request, session_id: str, gov: GovernorDep, who: OperatorDep) -> HTMLResponse:
    session = await gov.sessions.get_session(who.principal, session_id)
    return page(request, "session.html", who=who, session=session, now=gov.now())


@router.post("/sessions/{session_id}/revoke")
async def revoke_session(
    request: Request, session_id: str, gov: GovernorDep, who: ActingDep
) -> RedirectResponse:
    session = await gov.sessions.revoke_session(who.principal, session_id)
    return RedirectResponse(f"{request.scope['root_path']}/sessions/{session.session_id}", status_code=303)
