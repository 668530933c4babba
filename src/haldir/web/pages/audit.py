"""The audit trail: entries filtered by agent, session, tool, status and flag; one entry with its
inclusion proof checked against the latest signed checkpoint."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from haldir.core.ledger import EntryFilter, to_hex
from haldir.web.guard import GovernorDep, OperatorDep
from haldir.web.proofs import check_inclusion
from haldir.web.render import page

router = APIRouter()
PAGE_SIZE = 50
Text = Annotated[str, Query(max_length=200)]


@router.get("/audit", response_class=HTMLResponse)
async def list_entries(
    request: Request,
    gov: GovernorDep,
    who: OperatorDep,
    agent_id: Text = "",
    session_id: Text = "",
    tool: Text = "",
    status: Literal["", "ok", "denied", "error"] = "",
    flagged: Literal["", "yes", "no"] = "",
    cursor: Annotated[str, Query(max_length=512)] = "",
) -> HTMLResponse:
    where = EntryFilter(
        session_id=session_id or None,
        agent_id=agent_id or None,
        tool=tool or None,
        status=status or None,
        flagged=None if not flagged else flagged == "yes",
    )
    listed = await gov.ledger.list_entries(who.principal, where=where, limit=PAGE_SIZE, cursor=cursor or None)
    filters = {
        "agent_id": agent_id,
        "session_id": session_id,
        "tool": tool,
        "status": status,
        "flagged": flagged,
    }
    return page(
        request,
        "audit.html",
        who=who,
        entries=[e.record for e in listed.entries],
        filters=filters,
        next_cursor=listed.next_cursor,
    )


@router.get("/audit/{entry_id}", response_class=HTMLResponse)
async def show_entry(request: Request, entry_id: str, gov: GovernorDep, who: OperatorDep) -> HTMLResponse:
    entry = await gov.ledger.get_entry(who.principal, entry_id)
    check = await check_inclusion(gov, who.principal, entry)
    hashes = {
        "leaf": to_hex(entry.leaf_hash),
        "prev": to_hex(entry.prev_hash),
        "entry": to_hex(entry.entry_hash),
    }
    return page(
        request,
        "entry.html",
        who=who,
        record=entry.record,
        leaf_index=entry.leaf_index,
        hashes=hashes,
        check=check,
    )
