"""Anomaly rules over HTTP: create, list and delete the tenant's rules that flag ledger entries."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from haldir.core.anomalies import RULE_TYPES, Rule
from haldir.http.auth import GovernorDep, PrincipalDep
from haldir.http.errors import ERROR_RESPONSES
from haldir.http.schemas import Money, Timestamp, documented_enum

router = APIRouter(prefix="/v1/audit/rules", tags=["audit"], responses=ERROR_RESPONSES)


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(
        max_length=32,
        description="`cost_over`, `rate_over`, `tool_match` or `outside_hours`.",
        json_schema_extra=documented_enum(RULE_TYPES),
    )
    max_usd: Money | None = Field(default=None, description="cost_over: flag entries that cost more.")
    max_calls: StrictInt | None = Field(
        default=None, description="rate_over: flag a session's actions beyond this many per window."
    )
    window_seconds: StrictInt | None = Field(default=None, description="rate_over: the window, in seconds.")
    pattern: str | None = Field(
        default=None, max_length=200, description="tool_match: a tool name or a glob such as `delete_*`."
    )
    timezone: str | None = Field(
        default=None, max_length=64, description="outside_hours: an IANA time zone, e.g. `Europe/Berlin`."
    )
    start: str | None = Field(default=None, description="outside_hours: normal hours begin, local `HH:MM`.")
    end: str | None = Field(
        default=None, description="outside_hours: normal hours end, local `HH:MM` (before start: overnight)."
    )
    days: list[str] | None = Field(
        default=None, description="outside_hours: the days with normal hours, `mon`..`sun` (default all)."
    )
    tools: str | None = Field(
        default=None, max_length=200, description="outside_hours: judge only tools matching this glob."
    )


class RuleOut(BaseModel):
    rule_id: str
    type: str
    max_usd: str | None = None
    max_calls: int | None = None
    window_seconds: int | None = None
    pattern: str | None = None
    timezone: str | None = None
    start: str | None = None
    end: str | None = None
    days: list[str] | None = None
    tools: str | None = None
    created_at: Timestamp

    @classmethod
    def of(cls, rule: Rule) -> RuleOut:
        return cls(rule_id=rule.rule_id, type=rule.type, created_at=rule.created_at, **rule.params())


class RuleList(BaseModel):
    rules: list[RuleOut]


@router.post("", status_code=201, response_model=RuleOut, response_model_exclude_none=True)
async def create_rule(body: RuleCreate, gov: GovernorDep, who: PrincipalDep) -> RuleOut:
    params = body.model_dump(exclude={"type"}, exclude_none=True)
    return RuleOut.of(await gov.rules.create_rule(who, type=body.type, params=params))


@router.get("", response_model=RuleList, response_model_exclude_none=True)
async def list_rules(gov: GovernorDep, who: PrincipalDep) -> RuleList:
    return RuleList(rules=[RuleOut.of(rule) for rule in await gov.rules.list_rules(who)])


@router.delete("/{rule_id}", response_model=RuleOut, response_model_exclude_none=True)
async def delete_rule(rule_id: str, gov: GovernorDep, who: PrincipalDep) -> RuleOut:
    return RuleOut.of(await gov.rules.delete_rule(who, rule_id))
