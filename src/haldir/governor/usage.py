"""Usage and status: a tenant's counters over a window, the overview panel, and the status of each part
of the deployment, all read from counters and indexed queries so they cost the same on any log size."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, timedelta

from haldir.core.clock import Clock
from haldir.core.keys import Principal
from haldir.core.status import (
    Component,
    Level,
    Status,
    UpstreamState,
    upstreams_component,
    webhooks_component,
)
from haldir.core.usage import MAX_DAYS, Overview, UsageReport, day_number, month_start, usage_report
from haldir.errors import ConfigurationError, HaldirError, InvalidRequest, LedgerTampered
from haldir.governor.ledger import Ledger
from haldir.governor.limits import Limits
from haldir.store.ports import HealthStore, UsageStore

FLAGGED_DAYS = 7


class Usage:
    def __init__(
        self,
        *,
        usage_store: UsageStore,
        health: HealthStore,
        ledger: Ledger,
        limits: Limits,
        clock: Clock,
        schema_head: str,
    ) -> None:
        self._store = usage_store
        self._limits = limits
        self._health = health
        self._ledger = ledger
        self._clock = clock
        self._schema_head = schema_head

    async def usage(self, principal: Principal, *, since: date | None, until: date | None) -> UsageReport:
        """The tenant's counters from `since` to `until` (UTC days, both included; by default this
        month up to today), by day and by agent; and what it used of its quota now."""
        principal.require("audit:read")
        now = self._clock.now()
        since = since or month_start(now)
        until = until or now.date()
        if since > until:
            raise InvalidRequest(f"since ({since}) is after until ({until})")
        if (until - since).days >= MAX_DAYS:
            raise InvalidRequest(f"a usage window covers at most {MAX_DAYS} days, got {since}..{until}")
        rows = await self._store.days(principal.tenant_id, first=day_number(since), last=day_number(until))
        report = usage_report(since, until, rows)
        return replace(report, quota=await self._limits.quota_usage(principal))

    async def overview(self, principal: Principal) -> Overview:
        """The tenant panel: this month's counters, what the tenant holds now, flags of the last 7 days,
        and whether the stored log extends its latest signed checkpoint."""
        principal.require("audit:read")
        now = self._clock.now()
        today, month = now.date(), month_start(now)
        week = today - timedelta(days=FLAGGED_DAYS - 1)
        first = min(week, month)
        rows = await self._store.days(principal.tenant_id, first=day_number(first), last=day_number(today))
        tenant = await self._store.tenant(principal.tenant_id, now=now)
        size, verified, problem = await self._checkpoint(principal)
        quota = await self._limits.quota(principal.tenant_id)
        return Overview(
            tenant_id=principal.tenant_id,
            at=now,
            month=usage_report(month, today, [row for row in rows if row[0] >= day_number(month)]),
            tenant=tenant,
            flagged_7d=sum(counts.flagged for day, _, counts in rows if day >= day_number(week)),
            checkpoint_size=size,
            chain_verified=verified,
            problems=[f"ledger: {problem}"] if verified is False else [],
            actions_quota=quota.actions_per_month,
            agents_quota=quota.agents,
            requests_per_second_quota=quota.requests_per_second,
        )

    async def status(self, principal: Principal, *, upstreams: Sequence[UpstreamState] | None) -> Status:
        """Each component green, yellow or red: this API, the store, its schema, the log and its signer,
        webhook deliveries and the tenant's upstreams (as this process's connections know them)."""
        principal.require("audit:read")
        components = [Component("api", Level.green, "answering")]
        store = await self._store_component()
        components.append(store)
        if store.level is Level.red:  # nothing else can be read
            return Status(components)
        components.append(await self._schema_component())
        size, verified, problem = await self._checkpoint(principal)
        if verified is None:
            components.append(Component("ledger", Level.yellow, problem))
        elif verified:
            components.append(Component("ledger", Level.green, f"extends its checkpoint at size {size}"))
        else:
            components.append(Component("ledger", Level.red, problem))
        components.append(self._signer_component())
        tenant = await self._store.tenant(principal.tenant_id, now=self._clock.now())
        components.append(webhooks_component(tenant.webhooks, tenant.deliveries_24h))
        if upstreams is None:
            components.append(Component("upstreams", Level.yellow, "this API key lacks scope 'proxy:read'"))
        else:
            components.append(upstreams_component(list(upstreams)))
        return Status(components)

    def _signer_component(self) -> Component:
        vkey = self._ledger.signing_key()
        if vkey is None:
            return Component("signer", Level.red, "no log signing key: checkpoints cannot be signed")
        return Component("signer", Level.green, f"signs checkpoints as {vkey}")

    async def _store_component(self) -> Component:
        started = time.perf_counter()
        try:
            await self._health.ping()
        except HaldirError as exc:
            return Component("store", Level.red, exc.message)
        took = (time.perf_counter() - started) * 1000
        return Component("store", Level.green, f"{self._health.backend} answered in {took:.1f} ms")

    async def _schema_component(self) -> Component:
        current = await self._health.schema_revision()
        if current == self._schema_head:
            return Component("migrations", Level.green, f"at {current}, the latest")
        return Component(
            "migrations",
            Level.red,
            f"at {current or 'nothing'}, this version needs {self._schema_head}: run 'haldir migrate up'",
        )

    async def _checkpoint(self, principal: Principal) -> tuple[int | None, bool | None, str]:
        """(size of the latest checkpoint, whether the stored log extends it, why not or why unknown):
        signing one for the current size when the log grew, which first proves it extends the last."""
        try:
            checkpoint = await self._ledger.checkpoint(principal)
        except LedgerTampered as exc:
            return None, False, exc.message
        except ConfigurationError as exc:
            return None, None, exc.message
        return checkpoint.tree_size, True, ""
