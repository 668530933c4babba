"""Spend: what the tenant's agents spent over a window of days, by day and by agent, drawn as SVG charts."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from haldir.web.chart import spend_by_agent, spend_by_day
from haldir.web.guard import GovernorDep, OperatorDep
from haldir.web.render import page

router = APIRouter()
DEFAULT_DAYS = 30


@router.get("/spend", response_class=HTMLResponse)
async def spend(
    request: Request,
    gov: GovernorDep,
    who: OperatorDep,
    since: Annotated[date | None, Query()] = None,
    until: Annotated[date | None, Query()] = None,
) -> HTMLResponse:
    until = until or gov.now().date()
    since = since or until - timedelta(days=DEFAULT_DAYS - 1)
    report = await gov.usage.usage(who.principal, since=since, until=until)
    return page(
        request,
        "spend.html",
        who=who,
        report=report,
        by_day=spend_by_day(report.days),
        by_agent=spend_by_agent(report.agents),
    )
