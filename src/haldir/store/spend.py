"""Budget changes, payment rows, ledger entries and events in one transaction: either all of a spend
commits or none of it does, so a session's `spent` and its ledger never disagree."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from haldir.core.approvals import Approval
from haldir.core.idempotency import IdempotencyClaim
from haldir.core.ledger import EntryDraft
from haldir.core.pagination import Page, Position
from haldir.core.payments import RELEASED, Payment
from haldir.core.sessions import Session
from haldir.core.tools import OpenCall
from haldir.store.approvals import consume
from haldir.store.outbox import record_event
from haldir.store.rows import payment_from_row, payment_row, session_from_row
from haldir.store.schema import (
    Micros,
    epoch_micros,
    from_epoch_micros,
    payments,
    proxy_calls,
    proxy_rate_counters,
    proxy_spend_counters,
    sessions,
)
from haldir.store.transaction import PendingEntry, Writing
from haldir.store.vault import SecretReleased

if TYPE_CHECKING:
    from haldir.store.sql import SqlStore


# Built once: every governed call runs them, and constructing a statement costs more than running it.
_OPEN_CALL = sa.insert(proxy_calls)
_CLOSE_CALL = (
    sa.update(proxy_calls)
    .where(
        proxy_calls.c.tenant_id == sa.bindparam("p_tenant"),
        proxy_calls.c.call_id == sa.bindparam("p_call"),
        proxy_calls.c.closed_at.is_(None),
    )
    .values(closed_at=sa.bindparam("p_at"), outcome=sa.bindparam("p_outcome"))
)


class SqlSpend:
    """Implements `haldir.store.ports.SpendTransaction` on one open write transaction of one tenant.

    Lock order, the same in every spend so concurrent ones never deadlock: the payment row or the
    rate-limit counters, then the session row, then the spend-limit counters, then the approval used,
    then the tenant's ledger head. Counters are taken in (policy id, subject) order.
    """

    def __init__(self, store: SqlStore, conn: Writing, tenant_id: str) -> None:
        self._store = store
        self._conn = conn
        self._tenant_id = tenant_id

    async def charge(
        self, session_id: str, micros: int, *, now: datetime, cap: int | None = None
    ) -> Session | None:
        """Add `micros` to the session's `spent` in one conditional UPDATE; the session afterwards.

        A charge (micros > 0) applies only while the session is valid and `spent + micros` stays within
        its limit, and within `cap` when given (a per-session spend limit); a release (micros < 0) always
        applies. None when the condition did not hold.
        """
        c = sessions.c
        where = [c.tenant_id == self._tenant_id, c.session_id == session_id]
        if micros > 0:
            where += [c.spent + micros <= c.spend_limit, c.revoked_at.is_(None), c.expires_at > now]
            if cap is not None:
                where.append(c.spent + micros <= cap)
        row = (
            await self._conn.execute(
                sa.update(sessions).where(*where).values(spent=c.spent + micros).returning(*sessions.c)
            )
        ).first()
        return None if row is None else session_from_row(row)

    async def record_spend(self, session_id: str, micros: int) -> Session | None:
        c = sessions.c
        row = (
            await self._conn.execute(
                sa.update(sessions)
                .where(c.tenant_id == self._tenant_id, c.session_id == session_id)
                .values(spent=c.spent + micros)
                .returning(*sessions.c)
            )
        ).first()
        return None if row is None else session_from_row(row)

    async def take_call(
        self, policy_id: str, subject: str, *, max_calls: int, window_start: datetime
    ) -> int | None:
        """Count one call against a rate limit in one conditional upsert; the window's count afterwards,
        or None when the window already holds `max_calls`.

        A row whose window is older than `window_start` starts the new window at 1: one row per
        (policy, subject), never a history. A replica whose clock lags counts into the newer window.
        """
        t = proxy_rate_counters
        newer = t.c.window_start < window_start
        statement = (
            self._store.insert(t)
            .values(
                tenant_id=self._tenant_id,
                policy_id=policy_id,
                subject=subject,
                window_start=window_start,
                count=1,
            )
            .on_conflict_do_update(
                index_elements=["tenant_id", "policy_id", "subject"],
                set_={
                    "count": sa.case((newer, 1), else_=t.c.count + 1),
                    "window_start": sa.case(
                        (newer, sa.literal(window_start, Micros())), else_=t.c.window_start
                    ),
                },
                where=sa.or_(newer, t.c.count < max_calls),
            )
            .returning(t.c.count)
        )
        count = (await self._conn.execute(statement)).scalar()
        return None if count is None else int(count)

    async def charge_limit(self, policy_id: str, subject: str, micros: int, *, max_micros: int) -> int | None:
        """Add `micros` (> 0) to a spend-limit counter in one conditional upsert, if the total stays within
        `max_micros`; the total afterwards, or None."""
        if micros > max_micros:
            return None
        t = proxy_spend_counters
        statement = (
            self._store.insert(t)
            .values(tenant_id=self._tenant_id, policy_id=policy_id, subject=subject, spent=micros)
            .on_conflict_do_update(
                index_elements=["tenant_id", "policy_id", "subject"],
                set_={"spent": t.c.spent + micros},
                where=t.c.spent + micros <= max_micros,
            )
            .returning(t.c.spent)
        )
        spent = (await self._conn.execute(statement)).scalar()
        return None if spent is None else int(spent)

    async def release_limit(self, policy_id: str, subject: str, micros: int) -> None:
        """Take `micros` back off a spend-limit counter (a call that failed); a deleted policy's counter
        is gone, and then there is nothing to release."""
        c = proxy_spend_counters.c
        await self._conn.execute(
            sa.update(proxy_spend_counters)
            .where(c.tenant_id == self._tenant_id, c.policy_id == policy_id, c.subject == subject)
            .values(spent=sa.case((c.spent >= micros, c.spent - micros), else_=0))
        )

    async def session(self, session_id: str) -> Session | None:
        row = (
            await self._conn.execute(
                sa.select(sessions).where(
                    sessions.c.tenant_id == self._tenant_id, sessions.c.session_id == session_id
                )
            )
        ).first()
        return None if row is None else session_from_row(row)

    async def claim(self, request: IdempotencyClaim, resource_id: str, *, at: datetime) -> str | None:
        """Claim an Idempotency-Key in this transaction: None when new, else the earlier resource id."""
        return await self._store.claim_idempotency(self._conn, self._tenant_id, request, resource_id, at)

    async def insert_payment(self, payment: Payment) -> None:
        await self._conn.execute(sa.insert(payments).values(**payment_row(payment)))

    async def payment(self, payment_id: str) -> Payment | None:
        """The payment, locked until the transaction ends (on PostgreSQL)."""
        row = (
            await self._conn.execute(
                sa.select(payments)
                .where(payments.c.tenant_id == self._tenant_id, payments.c.payment_id == payment_id)
                .with_for_update()
            )
        ).first()
        return None if row is None else payment_from_row(row)

    async def open_payments(self, session_id: str) -> list[Payment]:
        c = payments.c
        rows = await self._conn.execute(
            sa.select(payments)
            .where(
                c.tenant_id == self._tenant_id,
                c.session_id == session_id,
                c.status.not_in(RELEASED),
                c.reported < sa.func.coalesce(c.captured, c.amount),
            )
            .order_by(c.created_at, c.payment_id)
            .with_for_update()
        )
        return [payment_from_row(row) for row in rows]

    async def settle_payment(
        self, payment_id: str, *, status: str, captured_micros: int | None, now: datetime
    ) -> Payment | None:
        """Move an authorized payment to `status`; None unless it was still authorized."""
        c = payments.c
        row = (
            await self._conn.execute(
                sa.update(payments)
                .where(c.tenant_id == self._tenant_id, c.payment_id == payment_id, c.status == "authorized")
                .values(status=status, captured=captured_micros, updated_at=now)
                .returning(*payments.c)
            )
        ).first()
        return None if row is None else payment_from_row(row)

    async def report(self, payment_id: str, micros: int, *, now: datetime) -> Payment | None:
        """Count `micros` of reported cost against the payment, if that stays within what it holds."""
        c = payments.c
        row = (
            await self._conn.execute(
                sa.update(payments)
                .where(
                    c.tenant_id == self._tenant_id,
                    c.payment_id == payment_id,
                    c.status.not_in(RELEASED),
                    c.reported + micros <= sa.func.coalesce(c.captured, c.amount),
                )
                .values(reported=c.reported + micros, updated_at=now)
                .returning(*payments.c)
            )
        ).first()
        return None if row is None else payment_from_row(row)

    async def open_call(self, call: OpenCall) -> None:
        """Remember an admitted call until its outcome is recorded (`close_call`)."""
        await self._conn.execute(
            _OPEN_CALL,
            {
                "tenant_id": self._tenant_id,
                "call_id": call.call_id,
                "session_id": call.session_id,
                "agent_id": call.agent_id,
                "tool": call.tool,
                "cost": call.cost_micros,
                "admitted_at": call.admitted_at,
                "details": call.details,
                "closed_at": None,
                "outcome": None,
            },
        )

    async def close_call(self, call_id: str, *, outcome: str, at: datetime) -> bool:
        """Close an admitted call whose outcome (ok, error or unknown) this transaction records; False
        when it was closed already (a finish or the stale-call sweep came first)."""
        closed = await self._conn.execute(
            _CLOSE_CALL, {"p_tenant": self._tenant_id, "p_call": call_id, "p_at": at, "p_outcome": outcome}
        )
        return bool(closed.rowcount)

    async def count_release(self, name: str, *, at: datetime) -> None:
        """Count a release of the tenant's secret `name` (its value goes to a governed call) when this
        transaction commits, with the other releases of the secret in its commit."""
        self._conn.queue(SecretReleased(self._tenant_id, name, at))

    def append(self, draft: EntryDraft) -> PendingEntry:
        """Queue the entry of this spend; it is appended last in the transaction, before the commit."""
        return self._conn.append(draft)

    async def consume_approval(self, binding: str, *, at: datetime) -> Approval | None:
        """Use the approved request of `binding` in this transaction: the spend it allows commits with it,
        or neither does."""
        return await consume(self._conn, self._tenant_id, binding, at=at)

    async def record_event(self, type: str, payload: dict[str, Any], *, at: datetime) -> None:
        await record_event(self._conn, self._tenant_id, type, payload, at=at)


async def get_payment(store: SqlStore, tenant_id: str, payment_id: str) -> Payment | None:
    async with store.read_connection() as conn:
        row = (
            await conn.execute(
                sa.select(payments).where(
                    payments.c.tenant_id == tenant_id, payments.c.payment_id == payment_id
                )
            )
        ).first()
    return None if row is None else payment_from_row(row)


async def list_payments(
    store: SqlStore, tenant_id: str, *, session_id: str | None, limit: int, after: Position | None
) -> Page[Payment]:
    """Newest first, by creation time then id."""
    c = payments.c
    query = sa.select(payments).where(c.tenant_id == tenant_id)
    if session_id is not None:
        query = query.where(c.session_id == session_id)
    if after is not None:
        at = from_epoch_micros(after.sort_key)
        query = query.where(sa.or_(c.created_at < at, sa.and_(c.created_at == at, c.payment_id < after.id)))
    query = query.order_by(c.created_at.desc(), c.payment_id.desc()).limit(limit + 1)
    async with store.read_connection() as conn:
        rows = (await conn.execute(query)).all()
    items = [payment_from_row(row) for row in rows[:limit]]
    last = items[-1] if len(rows) > limit else None
    return Page(items, None if last is None else Position(epoch_micros(last.created_at), last.payment_id))
