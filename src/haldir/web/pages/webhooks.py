"""Webhooks: the tenant's subscriptions and their deliveries with every attempt; redelivering one."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from haldir.web.guard import ActingDep, GovernorDep, OperatorDep
from haldir.web.render import page

router = APIRouter()
PAGE_SIZE = 50


@router.get("/webhooks", response_class=HTMLResponse)
async def list_webhooks(
    request: Request,
    gov: GovernorDep,
    who: OperatorDep,
    webhook_id: Annotated[str, Query(max_length=100)] = "",
    status: Literal["", "pending", "delivered", "failed"] = "",
    cursor: Annotated[str, Query(max_length=512)] = "",
) -> HTMLResponse:
    hooks = await gov.webhooks.list_webhooks(who.principal)
    deliveries = await gov.webhooks.list_deliveries(
        who.principal,
        webhook_id=webhook_id or None,
        status=status or None,
        limit=PAGE_SIZE,
        cursor=cursor or None,
    )
    return page(
        request,
        "webhooks.html",
        who=who,
        hooks=hooks,
        deliveries=deliveries,
        webhook_id=webhook_id,
        status=status,
    )


@router.post("/webhooks/deliveries/{delivery_id}/redeliver")
async def redeliver(request: Request, delivery_id: str, gov: GovernorDep, who: ActingDep) -> RedirectResponse:
    queued = await gov.webhooks.redeliver(who.principal, delivery_id)
    return RedirectResponse(
        f"{request.scope['root_path']}/webhooks?webhook_id={queued.webhook_id}", status_code=303
    )
