"""Approval rules and approval requests in SQL. Every change of an approval commits with its ledger entry
and its `approval.*` event; a decision and a use are conditional updates, so exactly one of two racing
deciders (or two racing retries) wins."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from haldir.core.approvals import (
    APPROVED,
    CONSUMED,
    DECIDED_EVENT,
    EXPIRED,
    OPEN,
    PENDING,
    REQUESTED_EVENT,
    Approval,
    ApprovalRule,
)
from haldir.core.ledger import EntryDraft
from haldir.core.pagination import Page, Position
from haldir.store.outbox import record_event
from haldir.store.schema import (
    approval_rules,
    approvals,
    epoch_micros,
    from_epoch_micros,
)
from haldir.store.transaction import Executes, Writing

if TYPE_CHECKING:
    from haldir.store.sql import SqlStore

EntryOf = Callable[[Approval], EntryDraft]


class SqlApprovals:
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    # rules

    async def insert_rule(self, tenant_id: str, rule: ApprovalRule, *, entry: EntryDraft) -> None:
        async with self._store.write_transaction() as conn:
            await self._store.ensure_tenant(conn, tenant_id, at=rule.created_at)
            await conn.execute(sa.insert(approval_rules).values(tenant_id=tenant_id, **_rule_row(rule)))
            conn.append(entry)

    async def list_rules(self, tenant_id: str) -> list[ApprovalRule]:
        """The tenant's rules, oldest first."""
        c = approval_rules.c
        async with self._store.read_connection() as conn:
            rows = await conn.execute(
                sa.select(approval_rules).where(c.tenant_id == tenant_id).order_by(c.created_at, c.rule_id)
            )
            return [_rule(row) for row in rows]

    async def delete_rule(
        self, tenant_id: str, rule_id: str, *, entry: Callable[[ApprovalRule], EntryDraft]
    ) -> ApprovalRule | None:
        c = approval_rules.c
        async with self._store.write_transaction() as conn:
            row = (
                await conn.execute(
                    sa.delete(approval_rules)
                    .where(c.tenant_id == tenant_id, c.rule_id == rule_id)
                    .returning(*approval_rules.c)
                )
            ).first()
            if row is None:
                return None
            rule = _rule(row)
            conn.append(entry(rule))
            return rule

    # approvals

    async def insert_approval(self, approval: Approval, *, entry: EntryDraft, lapse: EntryOf) -> Approval:
        """Record a new pending request, with its entry and `approval.requested` event; the open request
        of the same binding instead, when there is one (then nothing is written). Open requests of the
        binding that lapsed are expired in the same transaction, each with the entry `lapse` makes."""
        try:
            async with self._store.write_transaction() as conn:
                await self._store.ensure_tenant(conn, approval.tenant_id, at=approval.requested_at)
                await _expire_lapsed(conn, approval.tenant_id, approval.binding, approval.requested_at, lapse)
                # Read in this transaction: on SQLite it sees a racing request of the same group commit.
                found = await _open(conn, approval.tenant_id, approval.binding)
                if found is not None:
                    return found
                await conn.execute(sa.insert(approvals).values(**_approval_row(approval)))
                conn.append(entry)
                await _record_event(conn, approval, REQUESTED_EVENT)
            return approval
        except IntegrityError:  # PostgreSQL: a racing request committed the binding's open request first
            async with self._store.read_connection() as conn:
                found = await _open(conn, approval.tenant_id, approval.binding)
            if found is None:
                raise
            return found

    async def get_approval(self, tenant_id: str, approval_id: str) -> Approval | None:
        c = approvals.c
        async with self._store.read_connection() as conn:
            row = (
                await conn.execute(
                    sa.select(approvals).where(c.tenant_id == tenant_id, c.approval_id == approval_id)
                )
            ).first()
        return None if row is None else _approval(row)

    async def latest_approval(self, tenant_id: str, binding: str) -> Approval | None:
        """The newest request of `binding`, in any status."""
        c = approvals.c
        async with self._store.read_connection() as conn:
            row = (
                await conn.execute(
                    sa.select(approvals)
                    .where(c.tenant_id == tenant_id, c.binding == binding)
                    .order_by(c.requested_at.desc(), c.approval_id.desc())
                    .limit(1)
                )
            ).first()
        return None if row is None else _approval(row)

    async def decide(
        self,
        tenant_id: str,
        approval_id: str,
        *,
        status: str,
        decided_by: str | None,
        note: str | None,
        at: datetime,
        expires_at: datetime,
        entry: EntryOf,
    ) -> Approval | None:
        """Approve or deny a pending request that has not lapsed, with its entry and `approval.decided`
        event; None when it is not pending any more (another decision won, or it lapsed)."""
        c = approvals.c
        async with self._store.write_transaction() as conn:
            row = (
                await conn.execute(
                    sa.update(approvals)
                    .where(
                        c.tenant_id == tenant_id,
                        c.approval_id == approval_id,
                        c.status == PENDING,
                        c.expires_at > at,
                    )
                    .values(
                        status=status,
                        decided_by=decided_by,
                        decided_at=at,
                        note=note,
                        expires_at=expires_at,
                    )
                    .returning(*approvals.c)
                )
            ).first()
            if row is None:
                return None
            decided = _approval(row)
            conn.append(entry(decided))
            await _record_event(conn, decided, DECIDED_EVENT)
            return decided

    async def expire(
        self, tenant_id: str, approval_id: str, *, at: datetime, entry: EntryOf
    ) -> Approval | None:
        """Mark an open request past its `expires_at` expired, with its entry and event; None when it was
        not open and lapsed (decided, used or expired meanwhile)."""
        async with self._store.write_transaction() as conn:
            expired = await _expire(conn, tenant_id, approvals.c.approval_id == approval_id, at, entry)
        return expired[0] if expired else None

    async def lapsed(self, *, now: datetime, limit: int) -> list[Approval]:
        """Open requests of any tenant past their `expires_at`, oldest first: what a sweep expires."""
        c = approvals.c
        async with self._store.read_connection() as conn:
            rows = await conn.execute(
                sa.select(approvals)
                .where(c.status.in_(OPEN), c.expires_at <= now)
                .order_by(c.expires_at)
                .limit(limit)
            )
            return [_approval(row) for row in rows]

    async def pending_page(
        self, tenant_id: str, *, now: datetime, limit: int, after: Position | None
    ) -> Page[Approval]:
        """Pending requests that have not lapsed, oldest first."""
        c = approvals.c
        query = sa.select(approvals).where(c.tenant_id == tenant_id, c.status == PENDING, c.expires_at > now)
        if after is not None:
            at = from_epoch_micros(after.sort_key)
            query = query.where(
                sa.or_(c.requested_at > at, sa.and_(c.requested_at == at, c.approval_id > after.id))
            )
        query = query.order_by(c.requested_at, c.approval_id).limit(limit + 1)
        async with self._store.read_connection() as conn:
            rows = (await conn.execute(query)).all()
        items = [_approval(row) for row in rows[:limit]]
        last = items[-1] if len(rows) > limit else None
        return Page(
            items, None if last is None else Position(epoch_micros(last.requested_at), last.approval_id)
        )


async def consume(conn: Executes, tenant_id: str, binding: str, *, at: datetime) -> Approval | None:
    """Use the approved request of `binding` that has not lapsed, in the caller's transaction; None when
    there is none (not approved, already used, lapsed). Two transactions racing for it: one gets it."""
    c = approvals.c
    row = (
        await conn.execute(
            sa.update(approvals)
            .where(
                c.tenant_id == tenant_id,
                c.binding == binding,
                c.status == APPROVED,
                c.expires_at > at,
            )
            .values(status=CONSUMED, consumed_at=at)
            .returning(*approvals.c)
        )
    ).first()
    return None if row is None else _approval(row)


async def _open(conn: Executes, tenant_id: str, binding: str) -> Approval | None:
    c = approvals.c
    row = (
        await conn.execute(
            sa.select(approvals).where(c.tenant_id == tenant_id, c.binding == binding, c.status.in_(OPEN))
        )
    ).first()
    return None if row is None else _approval(row)


async def _expire_lapsed(conn: Writing, tenant_id: str, binding: str, at: datetime, entry: EntryOf) -> None:
    await _expire(conn, tenant_id, approvals.c.binding == binding, at, entry)


async def _expire(
    conn: Writing, tenant_id: str, which: sa.ColumnElement[bool], at: datetime, entry: EntryOf
) -> list[Approval]:
    c = approvals.c
    rows = (
        await conn.execute(
            sa.update(approvals)
            .where(c.tenant_id == tenant_id, which, c.status.in_(OPEN), c.expires_at <= at)
            .values(status=EXPIRED)
            .returning(*approvals.c)
        )
    ).all()
    expired = [_approval(row) for row in rows]
    for approval in expired:
        conn.append(entry(approval))
        await _record_event(conn, approval, DECIDED_EVENT)
    return expired


async def _record_event(conn: Writing, approval: Approval, kind: str) -> None:
    at = approval.decided_at or approval.requested_at
    await record_event(conn, approval.tenant_id, kind, approval.event_data(), at=at)


def _rule_row(rule: ApprovalRule) -> dict[str, Any]:
    return {
        "rule_id": rule.rule_id,
        "type": rule.type,
        "threshold": rule.threshold_micros,
        "tool": rule.tool,
        "agent_id": rule.agent_id,
        "description": rule.description,
        "created_by": rule.created_by,
        "created_at": rule.created_at,
    }


def _rule(row: sa.Row[Any]) -> ApprovalRule:
    return ApprovalRule(
        rule_id=row.rule_id,
        type=row.type,
        threshold_micros=row.threshold,
        tool=row.tool,
        agent_id=row.agent_id,
        description=row.description,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _approval_row(approval: Approval) -> dict[str, Any]:
    return {
        "tenant_id": approval.tenant_id,
        "approval_id": approval.approval_id,
        "binding": approval.binding,
        "status": approval.status,
        "kind": approval.kind,
        "session_id": approval.session_id,
        "agent_id": approval.agent_id,
        "tool": approval.tool,
        "arguments_sha256": approval.arguments_sha256,
        "amount": approval.amount_micros,
        "reason": approval.reason,
        "rule_ids": list(approval.rule_ids),
        "requested_by": approval.requested_by,
        "requested_at": approval.requested_at,
        "expires_at": approval.expires_at,
        "decided_by": approval.decided_by,
        "decided_at": approval.decided_at,
        "note": approval.note,
        "consumed_at": approval.consumed_at,
    }


def _approval(row: sa.Row[Any]) -> Approval:
    return Approval(
        tenant_id=row.tenant_id,
        approval_id=row.approval_id,
        binding=row.binding,
        status=row.status,
        kind=row.kind,
        session_id=row.session_id,
        agent_id=row.agent_id,
        tool=row.tool,
        arguments_sha256=row.arguments_sha256,
        amount_micros=int(row.amount),
        reason=row.reason,
        rule_ids=tuple(row.rule_ids),
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        expires_at=row.expires_at,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        note=row.note,
        consumed_at=row.consumed_at,
    )
