"""Usage over HTTP: a tenant's counters by day and agent, its overview panel, and the status of each part of
the deployment as the tenant's key sees it."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from haldir.core.money import format_micros
from haldir.core.quotas import UNLIMITED, QuotaUsage
from haldir.core.usage import Overview, Tally, UsageReport
from haldir.http.auth import GovernorDep, PrincipalDep
from haldir.http.errors import ERROR_RESPONSES
from haldir.http.schemas import Timestamp

router = APIRouter(prefix="/v1", tags=["usage"], responses=ERROR_RESPONSES)


class CountsOut(BaseModel):
    actions: int
    denied: int
    errors: int
    flagged: int
    vault: int
    spend_usd: str

    @classmethod
    def of(cls, counts: Tally) -> CountsOut:
        return cls(
            actions=counts.actions,
            denied=counts.denied,
            errors=counts.errors,
            flagged=counts.flagged,
            vault=counts.vault,
            spend_usd=format_micros(counts.charged),
        )


class DayOut(CountsOut):
    day: date


class AgentOut(CountsOut):
    agent_id: str


class QuotaOut(BaseModel):
    """The tenant's quota, set by the operator (null: no limit), beside what it used now."""

    actions_this_month: int = Field(description="Ledger entries this UTC month, whatever the window.")
    actions_per_month: int | None
    agents_active: int = Field(description="Distinct agents with a session in force.")
    agents: int | None
    requests_per_second: int | None

    @classmethod
    def of(cls, found: QuotaUsage | None) -> QuotaOut:
        found = found or QuotaUsage(UNLIMITED, 0, 0)
        return cls(
            actions_this_month=found.actions_this_month,
            actions_per_month=found.quota.actions_per_month,
            agents_active=found.agents_active,
            agents=found.quota.agents,
            requests_per_second=found.quota.requests_per_second,
        )


class UsageOut(BaseModel):
    since: date
    until: date
    total: CountsOut
    by_day: list[DayOut]
    by_agent: list[AgentOut]
    quota: QuotaOut

    @classmethod
    def of(cls, report: UsageReport) -> UsageOut:
        return cls(
            since=report.since,
            until=report.until,
            total=CountsOut.of(report.total),
            by_day=[DayOut(day=d.day, **CountsOut.of(d.counts).model_dump()) for d in report.days],
            by_agent=[
                AgentOut(agent_id=a.agent_id, **CountsOut.of(a.counts).model_dump()) for a in report.agents
            ],
            quota=QuotaOut.of(report.quota),
        )


class MetricsOut(BaseModel):
    """The tenant's counters now: the panel `haldir overview` draws."""

    tenant_id: str
    at: Timestamp
    status: Literal["ok", "degraded"]
    problems: list[str]
    actions_this_month: int
    actions_quota: int | None = Field(description="The operator's limit on actions a month; null: none.")
    spend_this_month_usd: str
    sessions_active: int
    agents_active: int
    agents_quota: int | None = Field(description="The limit on agents with sessions in force; null: none.")
    requests_per_second_quota: int | None
    secrets: int
    secret_accesses_this_month: int
    audit_entries: int
    flagged_7d: int
    chain_verified: bool | None
    checkpoint_size: int | None
    webhooks: int
    deliveries_24h: int
    delivery_success_24h: str | None
    approvals_pending: int

    @classmethod
    def of(cls, o: Overview) -> MetricsOut:
        return cls(
            tenant_id=o.tenant_id,
            at=o.at,
            status="ok" if o.status == "ok" else "degraded",
            problems=o.problems,
            actions_this_month=o.actions_this_month,
            actions_quota=o.actions_quota,
            spend_this_month_usd=format_micros(o.month.total.charged),
            sessions_active=o.tenant.sessions_active,
            agents_active=o.tenant.agents_active,
            agents_quota=o.agents_quota,
            requests_per_second_quota=o.requests_per_second_quota,
            secrets=o.tenant.secrets,
            secret_accesses_this_month=o.secret_accesses_this_month,
            audit_entries=o.tenant.audit_entries,
            flagged_7d=o.flagged_7d,
            chain_verified=o.chain_verified,
            checkpoint_size=o.checkpoint_size,
            webhooks=o.tenant.webhooks,
            deliveries_24h=o.tenant.deliveries_24h.total,
            delivery_success_24h=_percent(o),
            approvals_pending=o.tenant.approvals_pending,
        )


def _percent(o: Overview) -> str | None:
    rate = o.tenant.deliveries_24h.success_rate
    return None if rate is None else f"{rate:f}"


Light = Annotated[str, Field(description="`green`, `yellow` or `red`.")]


class ComponentOut(BaseModel):
    name: str
    status: Light
    detail: str


class StatusOut(BaseModel):
    status: Light = Field(description="The worst component's.")
    components: list[ComponentOut]


Day = Annotated[date | None, Query(description="A UTC day, YYYY-MM-DD; inclusive.")]


@router.get("/usage", response_model=UsageOut)
async def usage(gov: GovernorDep, who: PrincipalDep, since: Day = None, until: Day = None) -> UsageOut:
    """Actions, refusals, flags, Vault actions and spend from the ledger's daily counters, by day and by
    agent (default: this UTC month up to today; at most 366 days)."""
    return UsageOut.of(await gov.usage.usage(who, since=since, until=until))


@router.get("/metrics", response_model=MetricsOut)
async def metrics(gov: GovernorDep, who: PrincipalDep) -> MetricsOut:
    return MetricsOut.of(await gov.usage.overview(who))


@router.get("/status", response_model=StatusOut)
async def status(request: Request, gov: GovernorDep, who: PrincipalDep) -> StatusOut:
    """Each component green, yellow or red; upstreams as this server process's connections know them."""
    found = await gov.usage.status(who, upstreams=await request.app.state.proxy.upstream_states(who))
    return StatusOut(
        status=found.level.name,
        components=[
            ComponentOut(name=c.name, status=c.level.name, detail=c.detail) for c in found.components
        ],
    )
