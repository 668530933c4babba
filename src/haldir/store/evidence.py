"""What a compliance evidence pack counts, read from the store: every query names its tenant, and runs on
the scan reader (a pack is rare, and may read a period's worth of rows)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa

from haldir.core.approvals import EXPIRED, OPEN
from haldir.core.evidence_facts import (
    DataKeyFact,
    DeliveryTotals,
    LedgerPeriod,
    MasterKeyFact,
    PaymentTotals,
    SessionTotals,
    VaultKeys,
    is_budget_refusal,
)
from haldir.store.schema import (
    approvals,
    ledger_entries,
    payments,
    secret_versions,
    secrets,
    sessions,
    tenants,
    vault_data_keys,
    vault_master_keys,
    webhook_attempts,
    webhook_deliveries,
)

if TYPE_CHECKING:
    from haldir.store.sql import SqlStore

_L = ledger_entries.c


class SqlEvidence:
    """Implements `haldir.store.ports.EvidenceStore`."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def tenant_created_at(self, tenant_id: str) -> datetime | None:
        async with self._store.read_connection() as conn:
            found: datetime | None = (
                await conn.execute(sa.select(tenants.c.created_at).where(tenants.c.tenant_id == tenant_id))
            ).scalar()
        return found

    async def ledger_period(
        self, tenant_id: str, *, since: datetime, until: datetime, below: int
    ) -> LedgerPeriod:
        where = (
            _L.tenant_id == tenant_id,
            _L.leaf_index < below,
            _L.created_at >= since,
            _L.created_at < until,
        )
        counts = sa.select(
            sa.func.count(),
            sa.func.min(_L.leaf_index),
            sa.func.max(_L.leaf_index),
            sa.func.coalesce(sa.func.sum(sa.case((_L.flagged, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((_L.status == "denied", 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(_L.charged), 0),
        ).where(*where)
        refusals = 0
        async with self._store.scan_connection() as conn:
            entries, first, last, flagged, denied, charged = (await conn.execute(counts)).one()
            denials = await conn.execute(sa.select(_L.record).where(*where, _L.status == "denied"))
            for (record,) in denials:
                details = json.loads(record).get("details")
                refusals += isinstance(details, dict) and is_budget_refusal(details.get("refused"))
        return LedgerPeriod(
            entries=int(entries),
            first_leaf=None if first is None else int(first),
            last_leaf=None if last is None else int(last),
            flagged=int(flagged),
            denied=int(denied),
            charged_micros=int(charged),
            budget_refusals=refusals,
        )

    async def session_totals(self, tenant_id: str, *, since: datetime, until: datetime) -> SessionTotals:
        capped = sessions.c.spend_limit > 0
        query = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((capped, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((capped, sessions.c.spend_limit), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((capped, sessions.c.spent), else_=0)), 0),
        ).where(
            sessions.c.tenant_id == tenant_id, sessions.c.created_at >= since, sessions.c.created_at < until
        )
        async with self._store.scan_connection() as conn:
            created, with_cap, caps, spent = (await conn.execute(query)).one()
        return SessionTotals(int(created), int(with_cap), int(caps), int(spent))

    async def payment_totals(self, tenant_id: str, *, since: datetime, until: datetime) -> PaymentTotals:
        money = sa.func.coalesce(payments.c.captured, payments.c.amount)
        query = (
            sa.select(payments.c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(money), 0))
            .where(
                payments.c.tenant_id == tenant_id,
                payments.c.created_at >= since,
                payments.c.created_at < until,
            )
            .group_by(payments.c.status)
        )
        async with self._store.scan_connection() as conn:
            rows = (await conn.execute(query)).all()
        return PaymentTotals(
            counts={str(status): int(count) for status, count, _ in rows},
            micros={str(status): int(total) for status, _, total in rows},
        )

    async def approval_counts(
        self, tenant_id: str, *, since: datetime, until: datetime, now: datetime
    ) -> dict[str, int]:
        """Requests made in the period by their status at `now`: an open request past its expiry counts
        as expired, as the API shows it, whether or not the sweep has recorded it yet."""
        lapsed = sa.and_(approvals.c.status.in_(OPEN), approvals.c.expires_at <= now)
        status = sa.case((lapsed, EXPIRED), else_=approvals.c.status)
        query = (
            sa.select(status, sa.func.count())
            .where(
                approvals.c.tenant_id == tenant_id,
                approvals.c.requested_at >= since,
                approvals.c.requested_at < until,
            )
            .group_by(status)
        )
        async with self._store.scan_connection() as conn:
            return {str(name): int(count) for name, count in (await conn.execute(query)).all()}

    async def delivery_totals(self, tenant_id: str, *, since: datetime, until: datetime) -> DeliveryTotals:
        d, a = webhook_deliveries.c, webhook_attempts.c
        statuses = (
            sa.select(d.status, sa.func.count())
            .where(d.tenant_id == tenant_id, d.created_at >= since, d.created_at < until)
            .group_by(d.status)
        )
        attempts = sa.select(sa.func.count()).where(
            a.tenant_id == tenant_id, a.attempted_at >= since, a.attempted_at < until
        )
        async with self._store.scan_connection() as conn:
            by_status = {str(name): int(count) for name, count in (await conn.execute(statuses)).all()}
            attempted = int((await conn.execute(attempts)).scalar_one())
        return DeliveryTotals(by_status, attempted)

    async def vault_keys(self, tenant_id: str) -> VaultKeys:
        m, k, v = vault_master_keys.c, vault_data_keys.c, secret_versions.c
        async with self._store.scan_connection() as conn:
            masters = (
                await conn.execute(sa.select(m.version, m.check_value, m.created_at).order_by(m.version))
            ).all()
            data_keys = (
                await conn.execute(
                    sa.select(k.version, k.master_version, k.created_at)
                    .where(k.tenant_id == tenant_id)
                    .order_by(k.version)
                )
            ).all()
            count = (
                await conn.execute(sa.select(sa.func.count()).where(secrets.c.tenant_id == tenant_id))
            ).scalar_one()
            versions = (
                await conn.execute(
                    sa.select(v.data_key_version, sa.func.count())
                    .where(v.tenant_id == tenant_id)
                    .group_by(v.data_key_version)
                )
            ).all()
        return VaultKeys(
            master_keys=tuple(MasterKeyFact(int(row[0]), str(row[1]), row[2]) for row in masters),
            data_keys=tuple(DataKeyFact(int(row[0]), int(row[1]), row[2]) for row in data_keys),
            secrets=int(count),
            secret_versions_by_data_key={int(version): int(n) for version, n in versions},
        )
