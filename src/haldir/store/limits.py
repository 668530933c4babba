"""A tenant's operator-set limits in SQL: quotas, the per-second request window that processes lease
from, and the anomaly settings of the built-in detectors."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from haldir.core.anomalies import AnomalySettings
from haldir.core.ledger import EntryDraft
from haldir.core.quotas import Quota
from haldir.store.schema import anomaly_settings, sessions, tenant_quotas, tenant_rates, usage_days
from haldir.store.transaction import Executes

if TYPE_CHECKING:
    from haldir.store.sql import SqlStore


class SqlLimits:
    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._lease: sa.Insert | None = None

    # quotas

    async def quota(self, tenant_id: str) -> Quota | None:
        """The tenant's quota, or None when it has none."""
        q = tenant_quotas.c
        async with self._store.read_connection() as conn:
            row = (await conn.execute(sa.select(tenant_quotas).where(q.tenant_id == tenant_id))).first()
        return None if row is None else _quota(row._asdict())

    async def quotas(self) -> list[tuple[str, Quota, datetime]]:
        """Every tenant's quota with when it was last set, by tenant id."""
        async with self._store.read_connection() as conn:
            rows = (await conn.execute(sa.select(tenant_quotas).order_by(tenant_quotas.c.tenant_id))).all()
        return [(row.tenant_id, _quota(row._asdict()), row.updated_at) for row in rows]

    async def set_quota(self, tenant_id: str, quota: Quota, *, at: datetime, entry: EntryDraft) -> None:
        """Replace the tenant's quota (creating the tenant), recorded by `entry` in the same commit."""
        values = {
            "actions_per_month": quota.actions_per_month,
            "agents": quota.agents,
            "requests_per_second": quota.requests_per_second,
            "updated_at": at,
        }
        await self._replace(tenant_quotas, tenant_id, values, at=at, entry=entry)

    async def actions(self, tenant_id: str, *, first: int, last: int) -> int:
        """Ledger entries the tenant appended on days `first`..`last` (day numbers), from the counters."""
        parameters = {"p_tenant": tenant_id, "p_first": first, "p_last": last}
        async with self._store.read_connection() as conn:
            return int((await conn.execute(_ACTIONS, parameters)).scalar_one())

    async def agents(self, tenant_id: str, *, now: datetime, agent_id: str) -> tuple[int, bool]:
        """(distinct agents with a session in force, whether `agent_id` is one of them)."""
        s = sessions.c
        query = sa.select(
            sa.func.count(sa.distinct(s.agent_id)),
            sa.func.coalesce(sa.func.max(sa.case((s.agent_id == agent_id, 1), else_=0)), 0),
        ).where(s.tenant_id == tenant_id, s.expires_at > now, s.revoked_at.is_(None))
        async with self._store.read_connection() as conn:
            count, present = (await conn.execute(query)).one()
        return int(count), bool(present)

    async def lease(self, tenant_id: str, *, window: int, wanted: int, limit: int) -> int:
        """Take up to `wanted` of the `limit` requests of second `window` for this process; how many it
        got (0: the second is used up). One conditional upsert: race-free across processes."""
        async with self._store.write_transaction() as tx:
            granted = (
                await tx.execute(
                    self._lease_statement(),
                    {"p_tenant": tenant_id, "p_window": window, "p_wanted": wanted, "p_limit": limit},
                )
            ).scalar()
        return int(granted or 0)

    def _lease_statement(self) -> sa.Insert:
        if self._lease is None:
            r = tenant_rates.c
            insert = self._store.insert(tenant_rates)
            window = sa.bindparam("p_window", type_=sa.BigInteger())
            wanted = sa.bindparam("p_wanted", type_=sa.Integer())
            limit = sa.bindparam("p_limit", type_=sa.Integer())
            left = limit - r.used  # below zero once the limit was lowered within the second
            same = sa.case((left <= 0, 0), (left < wanted, left), else_=wanted)
            grant = sa.case((r.window == window, same), else_=wanted)
            self._lease = (
                insert.values(tenant_id=sa.bindparam("p_tenant"), window=window, used=wanted, granted=wanted)
                .on_conflict_do_update(
                    index_elements=["tenant_id"],
                    set_={
                        "window": window,
                        "used": sa.case((r.window == window, r.used + same), else_=wanted),
                        "granted": grant,
                    },
                )
                .returning(tenant_rates.c.granted)
            )
        return self._lease

    # anomaly settings

    async def anomaly_settings(self, conn: Executes, tenant_id: str) -> AnomalySettings | None:
        """The tenant's anomaly settings read on `conn`, or None when it keeps the defaults."""
        row = (await conn.execute(_SETTINGS, {"p_tenant": tenant_id})).first()
        if row is None:
            return None
        most = row.burst_max_actions
        return AnomalySettings(
            burst_max_actions=None if most is None else int(most),
            burst_window_seconds=int(row.burst_window_seconds),
        )

    async def read_anomaly_settings(self, tenant_id: str) -> AnomalySettings | None:
        async with self._store.read_connection() as conn:
            return await self.anomaly_settings(conn, tenant_id)

    async def set_anomaly_settings(
        self, tenant_id: str, settings: AnomalySettings, *, at: datetime, entry: EntryDraft
    ) -> None:
        values = {
            "burst_max_actions": settings.burst_max_actions,
            "burst_window_seconds": settings.burst_window_seconds,
            "updated_at": at,
        }
        await self._replace(anomaly_settings, tenant_id, values, at=at, entry=entry)

    async def _replace(
        self, table: sa.Table, tenant_id: str, values: dict[str, Any], *, at: datetime, entry: EntryDraft
    ) -> None:
        """Replace the tenant's row of `table` (creating the tenant), recorded by `entry` in its commit."""
        async with self._store.write_transaction() as tx:
            await self._store.ensure_tenant(tx, tenant_id, at=at)
            await tx.execute(
                self._store.insert(table)
                .values(tenant_id=tenant_id, **values)
                .on_conflict_do_update(index_elements=["tenant_id"], set_=values)
            )
            tx.append(entry)


# Built once: constructing a statement costs more than running it (this one runs on every write of a
# tenant with an actions quota).
_ACTIONS = sa.select(sa.func.coalesce(sa.func.sum(usage_days.c.actions), 0)).where(
    usage_days.c.tenant_id == sa.bindparam("p_tenant"),
    usage_days.c.day >= sa.bindparam("p_first"),
    usage_days.c.day <= sa.bindparam("p_last"),
)
_SETTINGS = sa.select(anomaly_settings).where(anomaly_settings.c.tenant_id == sa.bindparam("p_tenant"))


def _quota(row: dict[str, object]) -> Quota:
    def number(name: str) -> int | None:
        value = row[name]
        return None if value is None else int(value)  # type: ignore[call-overload]

    return Quota(
        actions_per_month=number("actions_per_month"),
        agents=number("agents"),
        requests_per_second=number("requests_per_second"),
    )
