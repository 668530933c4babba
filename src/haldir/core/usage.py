"""Usage: what a tenant's ledger recorded, counted per UTC day and agent as entries are appended, and the
tenant overview built on those counters (what `haldir overview`, `/v1/usage` and the dashboard show)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from haldir.core.money import from_micros
from haldir.core.quotas import QuotaUsage
from haldir.core.secrets import VAULT_TOOL

_EPOCH = date(1970, 1, 1)
MAX_DAYS = 366  # the longest window one usage report covers


def day_number(moment: datetime | date) -> int:
    """Days since 1970-01-01 of a UTC time (or a date): the key of the daily counters."""
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC).date()
    return (moment - _EPOCH).days


def day_date(number: int) -> date:
    return _EPOCH + timedelta(days=number)


def month_start(moment: datetime) -> date:
    """The first day of `moment`'s UTC month."""
    return moment.astimezone(UTC).date().replace(day=1)


@dataclass
class Tally:
    """The counters of one (day, agent), or a sum of them."""

    actions: int = 0
    denied: int = 0
    errors: int = 0
    flagged: int = 0
    vault: int = 0
    charged: int = 0  # micro-units, signed: refunds count against charges

    @property
    def spend(self) -> Decimal:
        return from_micros(self.charged)

    def add(self, other: Tally) -> None:
        self.actions += other.actions
        self.denied += other.denied
        self.errors += other.errors
        self.flagged += other.flagged
        self.vault += other.vault
        self.charged += other.charged

    def counters(self) -> dict[str, int]:
        return {
            "actions": self.actions,
            "denied": self.denied,
            "errors": self.errors,
            "flagged": self.flagged,
            "vault": self.vault,
            "charged": self.charged,
        }


def tally(columns: Iterable[Mapping[str, Any]]) -> dict[tuple[int, str], Tally]:
    """Entries' indexed columns (`indexed_fields`) counted per (day, agent id or "")."""
    counts: dict[tuple[int, str], Tally] = {}
    for row in columns:
        key = (day_number(row["created_at"]), row["agent_id"] or "")
        found = counts.get(key)
        if found is None:
            found = counts[key] = Tally()
        found.actions += 1
        status = row["status"]
        found.denied += status == "denied"
        found.errors += status == "error"
        found.flagged += bool(row["flagged"])
        found.vault += row["tool"] == VAULT_TOOL
        found.charged += row["charged"]
    return counts


@dataclass(frozen=True)
class Counted:
    """Counters of one day or one agent of a report."""

    counts: Tally

    @property
    def actions(self) -> int:
        return self.counts.actions

    @property
    def spend(self) -> Decimal:
        return self.counts.spend


@dataclass(frozen=True)
class DayUsage(Counted):
    day: date


@dataclass(frozen=True)
class AgentUsage(Counted):
    agent_id: str  # "" for entries without an agent (operator actions)


@dataclass(frozen=True)
class UsageReport:
    """A tenant's counters over the days `since`..`until` (both included): in total, by day (every day of
    the window, zeros included, oldest first) and by agent (most actions first)."""

    since: date
    until: date
    total: Tally
    days: list[DayUsage]
    agents: list[AgentUsage]
    quota: QuotaUsage | None = None  # the tenant's quota and what it used of it, now


def usage_report(since: date, until: date, rows: Iterable[tuple[int, str, Tally]]) -> UsageReport:
    """Counter rows (day number, agent, counts) of the window summed into a report."""
    by_day = {day_number(since) + offset: Tally() for offset in range((until - since).days + 1)}
    by_agent: dict[str, Tally] = {}
    total = Tally()
    for day, agent, counts in rows:
        by_day[day].add(counts)
        by_agent.setdefault(agent, Tally()).add(counts)
        total.add(counts)
    agents = sorted(by_agent.items(), key=lambda item: (-item[1].actions, item[0]))
    return UsageReport(
        since=since,
        until=until,
        total=total,
        days=[DayUsage(counts, day_date(day)) for day, counts in sorted(by_day.items())],
        agents=[AgentUsage(counts, agent) for agent, counts in agents],
    )


@dataclass(frozen=True)
class Deliveries:
    """Webhook deliveries made in a window: delivered, failed for good, still being retried."""

    delivered: int = 0
    failed: int = 0
    pending: int = 0

    @property
    def total(self) -> int:
        return self.delivered + self.failed + self.pending

    @property
    def success_rate(self) -> Decimal | None:
        """Delivered out of those settled, as a percentage with two decimals; None when none settled."""
        settled = self.delivered + self.failed
        if settled == 0:
            return None
        return (Decimal(self.delivered * 100) / settled).quantize(Decimal("0.01"))


@dataclass(frozen=True)
class Tenant:
    """What the store counts of a tenant, now: sessions, secrets, webhooks, approvals, the log's size."""

    sessions_active: int
    agents_active: int
    secrets: int
    webhooks: int
    deliveries_24h: Deliveries
    approvals_pending: int
    audit_entries: int


@dataclass(frozen=True)
class Overview:
    """The tenant panel of `haldir overview`: this month's counters and the tenant's state now."""

    tenant_id: str
    at: datetime
    month: UsageReport
    tenant: Tenant
    flagged_7d: int
    checkpoint_size: int | None  # the latest signed checkpoint's tree size; None before the first
    chain_verified: bool | None  # that checkpoint verifies against the stored tree; None: no checkpoint
    actions_quota: int | None = None  # set by an operator's tenant quota; None: unlimited
    agents_quota: int | None = None  # agents with sessions in force; None: unlimited
    requests_per_second_quota: int | None = None
    problems: list[str] = field(default_factory=list)  # why the status is not "ok"

    @property
    def status(self) -> str:
        return "ok" if not self.problems else "degraded"

    # The panel's lines by name, for renderers.

    @property
    def actions_this_month(self) -> int:
        return self.month.total.actions

    @property
    def spend_this_month(self) -> Decimal:
        return self.month.total.spend

    @property
    def secret_accesses_this_month(self) -> int:
        return self.month.total.vault


@dataclass(frozen=True)
class Deployment:
    """Deployment-wide totals for operators' metrics: no tenant's own figures."""

    entries: int
    tenants: int
    backlog: int  # webhook deliveries not yet delivered or given up
    pending: int  # approval requests waiting for a decision
