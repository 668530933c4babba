"""Watch over HTTP: append and read audit entries, proofs, checkpoints, verification and spend."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from haldir.core.ledger import EntryFilter, StoredEntry, to_hex
from haldir.governor.ledger import EntryPage, Order
from haldir.governor.verification import Spend
from haldir.http.auth import GovernorDep, PrincipalDep
from haldir.http.errors import ERROR_RESPONSES
from haldir.http.schemas import Money, Timestamp

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=ERROR_RESPONSES)


class EntryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: str = Field(max_length=100)
    tool: str = Field(min_length=1, max_length=200)
    action: str = Field(min_length=1, max_length=200)
    cost_usd: Money = Field(default=0)  # type: ignore[assignment]
    details: dict[str, Any] = Field(default_factory=dict, description="Any JSON object, up to 64 KiB.")
    status: str = Field(default="ok", description="`ok`, `denied` or `error`.")
    authorization_id: str | None = Field(
        default=None,
        max_length=100,
        description="An authorization of the session that already holds `cost_usd`: not charged twice.",
    )


class EntryCreated(BaseModel):
    entry_id: str
    leaf_index: int
    entry_hash: str
    flagged: bool
    flag_reason: str | None

    @classmethod
    def of(cls, entry: StoredEntry) -> EntryCreated:
        record = entry.record
        return cls(
            entry_id=entry.entry_id,
            leaf_index=entry.leaf_index,
            entry_hash=to_hex(entry.entry_hash),
            flagged=record["flagged"],
            flag_reason=record["flag_reason"],
        )


class EntryOut(BaseModel):
    record: dict[str, Any]
    leaf_index: int
    leaf_hash: str
    prev_hash: str
    entry_hash: str


class EntryList(BaseModel):
    entries: list[dict[str, Any]]
    next_cursor: str | None

    @classmethod
    def of(cls, page: EntryPage) -> EntryList:
        return cls(entries=[_flat(entry) for entry in page.entries], next_cursor=page.next_cursor)


class LogKeyOut(BaseModel):
    origin: str
    vkey: str
    public_key: str = Field(description="The raw Ed25519 public key, base64.")


class TreeHead(BaseModel):
    tree_size: int
    root_hash: str
    checkpoint: str
    signed_at: Timestamp


class InclusionOut(BaseModel):
    leaf_index: int
    tree_size: int
    leaf_hash: str
    root_hash: str
    proof: list[str]


class ConsistencyOut(BaseModel):
    first: int
    second: int
    first_root: str
    second_root: str
    proof: list[str]


class BadEntryOut(BaseModel):
    entry_id: str | None
    leaf_index: int | None
    reason: str


class VerifyOut(BaseModel):
    ok: bool
    tree_size: int
    first_bad: BadEntryOut | None = None


class SpendOut(BaseModel):
    total_usd: str
    count: int
    by_session: dict[str, str]
    by_agent: dict[str, str]
    by_tool: dict[str, str]

    @classmethod
    def of(cls, spend: Spend) -> SpendOut:
        return cls(
            total_usd=f"{spend.total:f}",
            count=spend.count,
            by_session={k: f"{v:f}" for k, v in spend.by_session.items()},
            by_agent={k: f"{v:f}" for k, v in spend.by_agent.items()},
            by_tool={k: f"{v:f}" for k, v in spend.by_tool.items()},
        )


Since = Annotated[AwareDatetime | None, Query(description="ISO-8601 with a time zone; inclusive.")]
Until = Annotated[AwareDatetime | None, Query(description="ISO-8601 with a time zone; exclusive.")]
Id = Annotated[str | None, Query(max_length=200)]


@router.post("", status_code=201, response_model=EntryCreated)
async def log_action(body: EntryCreate, gov: GovernorDep, who: PrincipalDep) -> EntryCreated:
    entry = await gov.budgets.log_action(
        who,
        session_id=body.session_id,
        tool=body.tool,
        action=body.action,
        cost_usd=body.cost_usd,
        details=body.details,
        status=body.status,
        authorization_id=body.authorization_id,
    )
    return EntryCreated.of(entry)


@router.get("", response_model=EntryList)
async def list_entries(
    gov: GovernorDep,
    who: PrincipalDep,
    session_id: Id = None,
    agent_id: Id = None,
    tool: Id = None,
    status: Id = None,
    flagged: bool | None = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    order: Annotated[
        Order, Query(description="`desc` (newest first, default) or `asc` (leaf order).")
    ] = "desc",
) -> EntryList:
    where = EntryFilter(session_id, agent_id, tool, status, flagged, since, until)
    page = await gov.ledger.list_entries(who, where=where, limit=limit, cursor=cursor, order=order)
    return EntryList.of(page)


@router.get("/entries/{entry_id}", response_model=EntryOut)
async def get_entry(entry_id: str, gov: GovernorDep, who: PrincipalDep) -> EntryOut:
    entry = await gov.ledger.get_entry(who, entry_id)
    return EntryOut(
        record=entry.record,
        leaf_index=entry.leaf_index,
        leaf_hash=to_hex(entry.leaf_hash),
        prev_hash=to_hex(entry.prev_hash),
        entry_hash=to_hex(entry.entry_hash),
    )


@router.get("/log-key", response_model=LogKeyOut)
async def log_key(gov: GovernorDep, who: PrincipalDep) -> LogKeyOut:
    key = gov.ledger.log_key(who)
    return LogKeyOut(origin=key.origin, vkey=key.vkey, public_key=base64.b64encode(key.public_key).decode())


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def checkpoint(gov: GovernorDep, who: PrincipalDep) -> PlainTextResponse:
    signed = await gov.ledger.checkpoint(who)
    return PlainTextResponse(signed.note, media_type="text/plain; charset=utf-8")


@router.get("/tree-head", response_model=TreeHead)
async def tree_head(gov: GovernorDep, who: PrincipalDep) -> TreeHead:
    signed = await gov.ledger.checkpoint(who)
    return TreeHead(
        tree_size=signed.tree_size,
        root_hash=to_hex(signed.root_hash),
        checkpoint=signed.note,
        signed_at=signed.signed_at,
    )


@router.get("/inclusion-proof/{entry_id}", response_model=InclusionOut)
async def inclusion_proof(
    entry_id: str, gov: GovernorDep, who: PrincipalDep, tree_size: Annotated[int | None, Query(ge=1)] = None
) -> InclusionOut:
    proof = await gov.ledger.inclusion_proof(who, entry_id, tree_size=tree_size)
    return InclusionOut(
        leaf_index=proof.leaf_index,
        tree_size=proof.tree_size,
        leaf_hash=to_hex(proof.leaf_hash),
        root_hash=to_hex(proof.root_hash),
        proof=[to_hex(node) for node in proof.proof],
    )


@router.get("/consistency-proof", response_model=ConsistencyOut)
async def consistency_proof(
    gov: GovernorDep,
    who: PrincipalDep,
    first: Annotated[int, Query(ge=1)],
    second: Annotated[int, Query(ge=1)],
) -> ConsistencyOut:
    proof = await gov.ledger.consistency_proof(who, first=first, second=second)
    return ConsistencyOut(
        first=proof.first,
        second=proof.second,
        first_root=to_hex(proof.first_root),
        second_root=to_hex(proof.second_root),
        proof=[to_hex(node) for node in proof.proof],
    )


@router.get("/verify", response_model=VerifyOut)
async def verify(gov: GovernorDep, who: PrincipalDep) -> VerifyOut:
    result = await gov.ledger.verify_log(who)
    bad = result.first_bad
    first_bad = (
        None
        if bad is None
        else BadEntryOut(entry_id=bad.entry_id, leaf_index=bad.leaf_index, reason=bad.reason)
    )
    return VerifyOut(ok=result.ok, tree_size=result.tree_size, first_bad=first_bad)


@router.get("/spend", response_model=SpendOut)
async def spend(
    gov: GovernorDep,
    who: PrincipalDep,
    session_id: Id = None,
    agent_id: Id = None,
    since: Since = None,
    until: Until = None,
) -> SpendOut:
    return SpendOut.of(
        await gov.ledger.spend(who, session_id=session_id, agent_id=agent_id, since=since, until=until)
    )


def _flat(entry: StoredEntry) -> dict[str, Any]:
    return {
        **entry.record,
        "leaf_index": entry.leaf_index,
        "leaf_hash": to_hex(entry.leaf_hash),
        "prev_hash": to_hex(entry.prev_hash),
        "entry_hash": to_hex(entry.entry_hash),
    }
