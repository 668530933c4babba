"""Approvals: the requests waiting for a person, one request's detail, and approving or denying it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from haldir.core.approvals import Approval
from haldir.web.guard import ActingDep, GovernorDep, OperatorDep
from haldir.web.render import page

router = APIRouter()
PAGE_SIZE = 50
Note = Annotated[str, Form(max_length=1000)]


@router.get("/approvals", response_class=HTMLResponse)
async def pending(
    request: Request,
    gov: GovernorDep,
    who: OperatorDep,
    cursor: Annotated[str, Query(max_length=512)] = "",
) -> HTMLResponse:
    listed = await gov.approvals.pending(who.principal, limit=PAGE_SIZE, cursor=cursor or None)
    return page(request, "approvals.html", who=who, page=listed, now=gov.now())


@router.get("/approvals/{approval_id}", response_class=HTMLResponse)
async def show_approval(
    request: Request, approval_id: str, gov: GovernorDep, who: OperatorDep
) -> HTMLResponse:
    approval = await gov.approvals.get_approval(who.principal, approval_id)
    return page(request, "approval.html", who=who, approval=approval, now=gov.now())


@router.post("/approvals/{approval_id}/approve")
async def approve(
    request: Request, approval_id: str, gov: GovernorDep, who: ActingDep, note: Note = ""
) -> RedirectResponse:
    return _decided(request, await gov.approvals.approve(who.principal, approval_id, note=note or None))


@router.post("/approvals/{approval_id}/deny")
async def deny(
    request: Request, approval_id: str, gov: GovernorDep, who: ActingDep, note: Note = ""
) -> RedirectResponse:
    return _decided(request, await gov.approvals.deny(who.principal, approval_id, note=note or None))


def _decided(request: Request, approval: Approval) -> RedirectResponse:
    return RedirectResponse(f"{request.scope['root_path']}/approvals/{approval.approval_id}", status_code=303)
