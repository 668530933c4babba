"""Tenant limits: the operator's quotas (actions per month, agents, requests per second), enforced on
the requests of the tenant's API keys, and what the tenant has used of them.

Quotas are read from a cache that any change empties on every process (setting a quota announces it),
so a request of an unlimited tenant pays nothing, and a limited one pays only what its limit needs:
the month's count for a request that would record new actions, one lease of the per-second window
for a tenth of a second's requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from haldir.cache import Cache
from haldir.core.clock import Clock
from haldir.core.keys import Principal
from haldir.core.ledger import EntryDraft
from haldir.core.quotas import (
    LIMITS_TOOL,
    MAX_ACTIONS_PER_MONTH,
    MAX_AGENTS,
    MAX_REQUESTS_PER_SECOND,
    UNLIMITED,
    Quota,
    QuotaUsage,
    lease_size,
    quota_value,
    rate_window,
    seconds_to_next_month,
)
from haldir.core.usage import day_number, month_start
from haldir.errors import QuotaExceeded
from haldir.governor.fields import valid_tenant_id
from haldir.governor.ledger import Ledger
from haldir.store.ports import ChangeFeed, LimitsStore

CACHED_TENANTS = 100_000
Release = Callable[[], None]


@dataclass
class _Lease:
    """Requests of one second this process took from the tenant's window and has not used yet."""

    window: int
    left: int


class Limits:
    def __init__(
        self, *, limits_store: LimitsStore, changes: ChangeFeed, ledger: Ledger, clock: Clock
    ) -> None:
        self._store = limits_store
        self._changes = changes
        self._ledger = ledger
        self._clock = clock
        self._quotas: Cache[str, Quota] = Cache(changes.epoch, maxsize=CACHED_TENANTS)
        self._leases: dict[str, _Lease] = {}
        self._held: dict[str, int] = {}  # new actions admitted here, per tenant, not yet recorded
        self._agent_locks: dict[str, asyncio.Lock] = {}  # session creations of limited tenants, in turn

    async def quota(self, tenant_id: str) -> Quota:
        """The tenant's quota (`UNLIMITED` without one), from memory while no change was announced."""

        async def load() -> Quota:
            return await self._store.quota(tenant_id) or UNLIMITED

        return await self._quotas.read_through(tenant_id, load) or UNLIMITED

    # operator commands

    async def set_quota(
        self,
        principal: Principal,
        *,
        actions_per_month: int | object | None = ...,
        agents: int | object | None = ...,
        requests_per_second: int | object | None = ...,
    ) -> Quota:
        """Change some of the tenant's limits (left out: unchanged; 0 or None: no limit), recorded in the
        ledger; every process sees the new quota at its next request."""
        principal.require("admin:write")
        tenant_id = valid_tenant_id(principal.tenant_id)
        now_quota = await self._store.quota(tenant_id) or UNLIMITED
        quota = Quota(
            actions_per_month=_changed(
                actions_per_month, now_quota.actions_per_month, "actions_per_month", MAX_ACTIONS_PER_MONTH
            ),
            agents=_changed(agents, now_quota.agents, "agents", MAX_AGENTS),
            requests_per_second=_changed(
                requests_per_second,
                now_quota.requests_per_second,
                "requests_per_second",
                MAX_REQUESTS_PER_SECOND,
            ),
        )
        details = {
            "actions_per_month": quota.actions_per_month,
            "agents": quota.agents,
            "requests_per_second": quota.requests_per_second,
        }
        await self._store.set_quota(
            tenant_id, quota, at=self._clock.now(), entry=self._entry(principal, details)
        )
        await self._changes.announce()
        return quota

    async def list_quotas(self) -> list[tuple[str, Quota, datetime]]:
        """Every tenant with a quota (an operator's view across tenants)."""
        return await self._store.quotas()

    async def quota_usage(self, principal: Principal) -> QuotaUsage:
        """The tenant's quota and what it used of each limit."""
        principal.require("audit:read")
        now = self._clock.now()
        actions = await self._store.actions(
            principal.tenant_id, first=day_number(month_start(now)), last=day_number(now)
        )
        agents, _ = await self._store.agents(principal.tenant_id, now=now, agent_id="")
        return QuotaUsage(await self.quota(principal.tenant_id), actions, agents)

    # enforcement

    async def admit_request(self, tenant_id: str, *, records: bool) -> Release | None:
        """Refuse (`QuotaExceeded`, with `retry_after`) a request of the tenant's API keys over its
        requests-per-second limit, or, when it `records` new actions, over its actions this month. An
        admitted request that records holds a place until the caller calls the release it returns."""
        quota = await self.quota(tenant_id)
        if quota.unlimited:
            return None
        if quota.requests_per_second is not None:
            await self._take_request(tenant_id, quota.requests_per_second)
        if records and quota.actions_per_month is not None:
            return await self._hold_action(tenant_id, quota.actions_per_month)
        return None

    @asynccontextmanager
    async def action(self, tenant_id: str) -> AsyncIterator[None]:
        """Hold a place for one new action of the tenant while the block records it, refusing it
        (`QuotaExceeded`) when the tenant used its actions this month: the check of every governed
        call, whichever adapter it came through."""
        quota = await self.quota(tenant_id)
        release = None
        if quota.actions_per_month is not None:
            release = await self._hold_action(tenant_id, quota.actions_per_month)
        try:
            yield
        finally:
            if release is not None:
                release()

    async def _hold_action(self, tenant_id: str, limit: int) -> Release:
        """Count the month's actions from the counters, plus the actions this process admitted and has
        not finished recording: so concurrent requests of one process never pass the quota together."""
        now = self._clock.now()
        used = await self._store.actions(tenant_id, first=day_number(month_start(now)), last=day_number(now))
        held = self._held.get(tenant_id, 0)
        if used + held >= limit:
            raise QuotaExceeded(
                f"tenant '{tenant_id}' used its {limit:,} actions this month ({used:,} recorded); reads "
                "still work, new actions resume when the next UTC month begins or the operator raises "
                "the quota",
                quota="actions_per_month",
                limit=limit,
                used=used,
                retry_after=seconds_to_next_month(now),
            )
        self._held[tenant_id] = held + 1

        def release() -> None:
            left = self._held.get(tenant_id, 1) - 1
            if left > 0:
                self._held[tenant_id] = left
            else:
                self._held.pop(tenant_id, None)

        return release

    @asynccontextmanager
    async def agent_room(self, tenant_id: str, agent_id: str) -> AsyncIterator[None]:
        """Refuse a session for a new agent when the tenant's agents with sessions in force are at its
        limit (an agent that already has one may always open more); else hold the tenant's turn while the
        block creates the session, so that this process's concurrent creations are counted one by one."""
        quota = await self.quota(tenant_id)
        if quota.agents is None:
            yield
            return
        lock = self._agent_locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:  # one lock per tenant with an agents quota, kept: a few bytes each
            await self._require_agent_room(tenant_id, agent_id, quota.agents)
            yield

    async def _require_agent_room(self, tenant_id: str, agent_id: str, limit: int) -> None:
        count, present = await self._store.agents(tenant_id, now=self._clock.now(), agent_id=agent_id)
        if present or count < limit:
            return
        raise QuotaExceeded(
            f"tenant '{tenant_id}' has {count} agents with sessions in force, its limit is {limit}: "
            f"agent {agent_id!r} can open a session when one of theirs expires or is revoked, "
            "or the operator raises the quota",
            quota="agents",
            limit=limit,
            used=count,
            retry_after=60,
        )

    async def _take_request(self, tenant_id: str, limit: int) -> None:
        window, wait = rate_window(self._clock.now())
        lease = self._leases.get(tenant_id)
        if lease is None or lease.window != window:
            lease = self._leases[tenant_id] = _Lease(window, 0)
            if len(self._leases) > CACHED_TENANTS:
                self._leases = {tenant_id: lease}
        if lease.left > 0:
            lease.left -= 1
            return
        if lease.left == 0:
            granted = await self._store.lease(tenant_id, window=window, wanted=lease_size(limit), limit=limit)
            if lease.window == window:
                lease.left += granted
                if lease.left > 0:
                    lease.left -= 1
                    return
                lease.left = -1  # the second is used up: refuse without asking again
        raise QuotaExceeded(
            f"tenant '{tenant_id}' is over its limit of {limit} requests per second; retry after {wait} s",
            quota="requests_per_second",
            limit=limit,
            retry_after=wait,
        )

    def _entry(self, principal: Principal, details: dict[str, int | None]) -> EntryDraft:
        return self._ledger.entry(
            principal.tenant_id,
            session_id=None,
            agent_id=None,
            tool=LIMITS_TOOL,
            action="tenant.quota.set",
            status="ok",
            cost_usd=0,
            details={**details, "key_prefix": principal.key_prefix},
        )


def _changed(value: int | object | None, current: int | None, field: str, high: int) -> int | None:
    if value is ...:
        return current
    return quota_value(value, field=field, high=high)
