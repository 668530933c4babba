"""The overview: the tenant panel of `haldir overview` (this month's counters, the tenant's state now,
whether the log extends its signed checkpoint), with this month's spend by day."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from haldir.web.chart import spend_by_day
from haldir.web.guard import GovernorDep, OperatorDep
from haldir.web.render import page

router = APIRouter()
NEEDS = "audit:read"


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, gov: GovernorDep, who: OperatorDep) -> HTMLResponse:
    if not who.can(NEEDS):  # the landing page: say what is missing and leave the menu usable
        return page(request, "overview.html", who=who, overview=None, needs=NEEDS)
    panel = await gov.usage.overview(who.principal)
    return page(request, "overview.html", who=who, overview=panel, chart=spend_by_day(panel.month.days))
