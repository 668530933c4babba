"""Approvals over HTTP: the rules that hold spends and calls for a person, the requests they raise, and
the decisions people make on them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from haldir.core.approvals import Approval, ApprovalRule
from haldir.core.money import format_micros
from haldir.core.pagination import MAX_PAGE, encode_cursor
from haldir.http.auth import GovernorDep, PrincipalDep
from haldir.http.errors import ERROR_RESPONSES
from haldir.http.schemas import Money, OptionalTimestamp, Timestamp

router = APIRouter(prefix="/v1/approvals", tags=["approvals"], responses=ERROR_RESPONSES)


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["spend_over", "tool", "agent"] = Field(
        description="`spend_over`: a spend over `threshold`; `tool`: a call of a tool matching `tool`; "
        "`agent`: every spend of `agent_id`."
    )
    threshold: Money | None = Field(
        default=None, description="spend_over: the amount in USD a spend must exceed."
    )
    tool: str | None = Field(
        default=None, max_length=200, description="tool: a tool name or a glob such as `send_*`."
    )
    agent_id: str | None = Field(default=None, max_length=200, description="Limit the rule to this agent.")
    description: str | None = Field(default=None, max_length=500)


class RuleOut(BaseModel):
    rule_id: str
    type: str
    threshold: str | None = None
    tool: str | None = None
    agent_id: str | None
    description: str
    created_by: str | None
    created_at: Timestamp

    @classmethod
    def of(cls, rule: ApprovalRule) -> RuleOut:
        return cls(**rule.as_json(), created_by=rule.created_by, created_at=rule.created_at)


class RuleList(BaseModel):
    rules: list[RuleOut]


class ApprovalAsk(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: str = Field(max_length=100)
    tool: str = Field(max_length=200, description="What the agent wants to do: a tool or action name.")
    amount: Money = Field(default=Decimal(0), description="What it would cost, in USD.")
    arguments_sha256: str | None = Field(
        default=None, max_length=64, description="SHA-256 (hex) of the RFC 8785 JSON of the call's arguments."
    )
    reason: str = Field(default="", max_length=1000, description="Why, for the person who decides.")


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(
        default=None, max_length=1000, description="Shown with the decision and recorded."
    )


class ApprovalOut(BaseModel):
    approval_id: str
    status: str = Field(description="`pending`, `approved`, `denied`, `expired` or `consumed`.")
    kind: str = Field(description="What asked: `payment`, `call` (the proxy) or `request` (the agent).")
    session_id: str
    agent_id: str
    tool: str
    arguments_sha256: str | None
    amount_usd: str
    reason: str
    rule_ids: list[str]
    requested_by: str | None = Field(description="Prefix of the API key that asked; null: the operator.")
    requested_at: Timestamp
    expires_at: Timestamp = Field(description="Pending: when it lapses; approved: by when to use it.")
    decided_by: str | None
    decided_at: OptionalTimestamp
    note: str | None
    consumed_at: OptionalTimestamp

    @classmethod
    def at(cls, approval: Approval, now: datetime) -> ApprovalOut:
        """The approval as it stands at `now` (one that lapsed reads as expired)."""
        return cls(
            approval_id=approval.approval_id,
            status=approval.status_at(now),
            kind=approval.kind,
            session_id=approval.session_id,
            agent_id=approval.agent_id,
            tool=approval.tool,
            arguments_sha256=approval.arguments_sha256,
            amount_usd=format_micros(approval.amount_micros),
            reason=approval.reason,
            rule_ids=list(approval.rule_ids),
            requested_by=approval.requested_by,
            requested_at=approval.requested_at,
            expires_at=approval.expires_at,
            decided_by=approval.decided_by,
            decided_at=approval.decided_at,
            note=approval.note,
            consumed_at=approval.consumed_at,
        )


class ApprovalList(BaseModel):
    approvals: list[ApprovalOut]
    next_cursor: str | None


@router.post("/rules", status_code=201, response_model=RuleOut)
async def create_rule(body: RuleCreate, gov: GovernorDep, who: PrincipalDep) -> RuleOut:
    return RuleOut.of(await gov.approvals.create_rule(who, body.model_dump(exclude_none=True)))


@router.get("/rules", response_model=RuleList)
async def list_rules(gov: GovernorDep, who: PrincipalDep) -> RuleList:
    return RuleList(rules=[RuleOut.of(rule) for rule in await gov.approvals.list_rules(who)])


@router.delete("/rules/{rule_id}", response_model=RuleOut)
async def delete_rule(rule_id: str, gov: GovernorDep, who: PrincipalDep) -> RuleOut:
    return RuleOut.of(await gov.approvals.delete_rule(who, rule_id))


@router.post("/request", status_code=201, response_model=ApprovalOut)
async def request_approval(body: ApprovalAsk, gov: GovernorDep, who: PrincipalDep) -> ApprovalOut:
    approval = await gov.approvals.request_approval(who, **body.model_dump())
    return ApprovalOut.at(approval, gov.now())


@router.get("/pending", response_model=ApprovalList)
async def list_pending(
    gov: GovernorDep,
    who: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ApprovalList:
    page = await gov.approvals.pending(who, limit=limit, cursor=cursor)
    now = gov.now()
    return ApprovalList(
        approvals=[ApprovalOut.at(approval, now) for approval in page.items],
        next_cursor=encode_cursor(page.next),
    )


@router.get("/{approval_id}", response_model=ApprovalOut)
async def get_approval(approval_id: str, gov: GovernorDep, who: PrincipalDep) -> ApprovalOut:
    approval = await gov.approvals.get_approval(who, approval_id)
    return ApprovalOut.at(approval, gov.now())


@router.post("/{approval_id}/approve", response_model=ApprovalOut)
async def approve(
    approval_id: str, gov: GovernorDep, who: PrincipalDep, body: Decision | None = None
) -> ApprovalOut:
    approval = await gov.approvals.approve(who, approval_id, note=None if body is None else body.note)
    return ApprovalOut.at(approval, gov.now())


@router.post("/{approval_id}/deny", response_model=ApprovalOut)
async def deny(
    approval_id: str, gov: GovernorDep, who: PrincipalDep, body: Decision | None = None
) -> ApprovalOut:
    approval = await gov.approvals.deny(who, approval_id, note=None if body is None else body.note)
    return ApprovalOut.at(approval, gov.now())
