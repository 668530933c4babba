"""Upstreams and their tools: what each upstream serves, which tools changed since they were pinned, and
approving a changed tool's new definition."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from haldir.web.guard import ActingDep, GovernorDep, OperatorDep, ProxyDep
from haldir.web.render import page

router = APIRouter()


@router.get("/upstreams", response_class=HTMLResponse)
async def list_upstreams(request: Request, gov: GovernorDep, who: OperatorDep) -> HTMLResponse:
    upstreams = await gov.registry.list_upstreams(who.principal)
    tools = await gov.registry.list_proxy_tools(who.principal)
    changed = {tool.name: _changes(tool.definition, tool.pending_definition) for tool in tools}
    return page(request, "upstreams.html", who=who, upstreams=upstreams, tools=tools, changed=changed)


@router.post("/tools/{name}/approve")
async def approve_tool(request: Request, name: str, service: ProxyDep, who: ActingDep) -> RedirectResponse:
    await service.approve(who.principal, name)
    return RedirectResponse(f"{request.scope['root_path']}/upstreams", status_code=303)


def _changes(pinned: dict[str, object], pending: dict[str, object] | None) -> list[tuple[str, str, str]]:
    """The top-level fields of a changed tool's definition that differ: (field, pinned, now), as JSON."""
    if pending is None:
        return []
    fields = sorted(set(pinned) | set(pending))
    return [
        (field, _json(pinned.get(field)), _json(pending.get(field)))
        for field in fields
        if pinned.get(field) != pending.get(field)
    ]


def _json(value: object) -> str:
    return "—" if value is None else json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
