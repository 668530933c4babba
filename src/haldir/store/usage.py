"""Usage reads: the daily counters the ledger keeps as it appends, and what a tenant holds now, each
counted with an indexed query (never a scan of the log)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from haldir.core.usage import Deliveries, Deployment, Tally, Tenant
from haldir.store.schema import (
    approvals,
    ledger_heads,
    secrets,
    sessions,
    usage_days,
    webhook_deliveries,
    webhooks,
)
from haldir.store.transaction import Executes

if TYPE_CHECKING:
    from haldir.store.sql import SqlStore

_COUNTERS = tuple(Tally().counters())


class SqlUsage:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def days(self, tenant_id: str, *, first: int, last: int) -> list[tuple[int, str, Tally]]:
        """The counter rows (day number, agent, counts) of days `first`..`last`, both included."""
        c = usage_days.c
        query = sa.select(c.day, c.agent_id, *(c[name] for name in _COUNTERS)).where(
            c.tenant_id == tenant_id, c.day >= first, c.day <= last
        )
        async with self._store.read_connection() as conn:
            rows = (await conn.execute(query)).all()
        return [(int(row[0]), row[1], Tally(*(int(value) for value in row[2:]))) for row in rows]

    async def tenant(self, tenant_id: str, *, now: datetime) -> Tenant:
        s, d, a = sessions.c, webhook_deliveries.c, approvals.c
        in_force = sa.and_(s.tenant_id == tenant_id, s.expires_at > now, s.revoked_at.is_(None))
        async with self._store.read_connection() as conn:
            active, agents = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.count(sa.distinct(s.agent_id))).where(in_force)
                )
            ).one()
            delivered: dict[str, int] = dict(
                (
                    await conn.execute(
                        sa.select(d.status, sa.func.count())
                        .where(d.tenant_id == tenant_id, d.created_at >= now - timedelta(days=1))
                        .group_by(d.status)
                    )
                ).all()
            )
            pending = await _count(
                conn,
                approvals,
                a.tenant_id == tenant_id,
                a.status == "pending",
                a.expires_at > now,
            )
            size = (
                await conn.execute(
                    sa.select(ledger_heads.c.size).where(ledger_heads.c.tenant_id == tenant_id)
                )
            ).scalar()
            return Tenant(
                sessions_active=int(active),
                agents_active=int(agents),
                secrets=await _count(conn, secrets, secrets.c.tenant_id == tenant_id),
                webhooks=await _count(conn, webhooks, webhooks.c.tenant_id == tenant_id),
                deliveries_24h=Deliveries(
                    delivered=int(delivered.get("delivered", 0)),
                    failed=int(delivered.get("failed", 0)),
                    pending=int(delivered.get("pending", 0)),
                ),
                approvals_pending=pending,
                audit_entries=int(size or 0),
            )

    async def deployment(self) -> Deployment:
        h = ledger_heads.c
        async with self._store.read_connection() as conn:
            entries, tenants = (await conn.execute(sa.select(sa.func.sum(h.size), sa.func.count()))).one()
            return Deployment(
                entries=int(entries or 0),
                tenants=int(tenants),
                backlog=await _count(conn, webhook_deliveries, webhook_deliveries.c.status == "pending"),
                pending=await _count(conn, approvals, approvals.c.status == "pending"),
            )


async def _count(conn: Executes, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(table).where(*where))).scalar_one())
