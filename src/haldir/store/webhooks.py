"""Webhooks in SQL: subscriptions, the fan-out of outbox events into deliveries, and the claim of due
deliveries under a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL; one conditional UPDATE under SQLite's
single writer), with every attempt recorded."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from haldir.core import ids
from haldir.core.pagination import Page, Position
from haldir.core.webhooks import (
    DELIVERY,
    WEBHOOK_TEST,
    Attempt,
    Claimed,
    Delivery,
    SealedSecret,
    Target,
    Webhook,
    event_body,
    should_disable,
)
from haldir.store.outbox import event_row
from haldir.store.schema import (
    Micros,
    epoch_micros,
    events,
    from_epoch_micros,
    webhook_attempts,
    webhook_deliveries,
    webhooks,
)
from haldir.store.transaction import Executes

if TYPE_CHECKING:
    from haldir.store.sql import SqlStore

_D = webhook_deliveries.c
_W = webhooks.c


class SqlWebhooks:
    """Implements `haldir.store.ports.WebhookStore`."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    # subscriptions

    async def insert_webhook(self, webhook: Webhook, secret: SealedSecret) -> None:
        async with self._store.write_transaction() as conn:
            await self._store.ensure_tenant(conn, webhook.tenant_id, at=webhook.created_at)
            await conn.execute(
                sa.insert(webhooks).values(
                    tenant_id=webhook.tenant_id,
                    webhook_id=webhook.webhook_id,
                    url=webhook.url,
                    description=webhook.description,
                    events=list(webhook.events),
                    secret_sealed=secret.sealed,
                    secret_version=secret.version,
                    data_key_version=secret.data_key_version,
                    enabled=webhook.enabled,
                    disabled_reason=webhook.disabled_reason,
                    failing_since=webhook.failing_since,
                    created_at=webhook.created_at,
                    updated_at=webhook.updated_at,
                )
            )

    async def count_webhooks(self, tenant_id: str) -> int:
        async with self._store.read_connection() as conn:
            found = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(webhooks).where(_W.tenant_id == tenant_id)
                )
            ).scalar()
        return int(found or 0)

    async def list_webhooks(self, tenant_id: str) -> list[Webhook]:
        async with self._store.read_connection() as conn:
            rows = await conn.execute(
                sa.select(webhooks).where(_W.tenant_id == tenant_id).order_by(_W.created_at, _W.webhook_id)
            )
            return [_webhook(row) for row in rows]

    async def get_webhook(self, tenant_id: str, webhook_id: str) -> Webhook | None:
        async with self._store.read_connection() as conn:
            row = (await conn.execute(_one_webhook(tenant_id, webhook_id))).first()
        return None if row is None else _webhook(row)

    async def target(self, tenant_id: str, webhook_id: str) -> Target | None:
        async with self._store.read_connection() as conn:
            row = (await conn.execute(_one_webhook(tenant_id, webhook_id))).first()
        return None if row is None else _target(row)

    async def delete_webhook(self, tenant_id: str, webhook_id: str) -> Webhook | None:
        """Delete a webhook with its deliveries and their attempts; the webhook, or None."""
        async with self._store.write_transaction() as conn:
            row = (
                await conn.execute(
                    sa.delete(webhooks)
                    .where(_W.tenant_id == tenant_id, _W.webhook_id == webhook_id)
                    .returning(*webhooks.c)
                )
            ).first()
            if row is None:
                return None
            mine = sa.select(_D.delivery_id).where(_D.tenant_id == tenant_id, _D.webhook_id == webhook_id)
            await conn.execute(
                sa.delete(webhook_attempts).where(
                    webhook_attempts.c.tenant_id == tenant_id, webhook_attempts.c.delivery_id.in_(mine)
                )
            )
            await conn.execute(
                sa.delete(webhook_deliveries).where(_D.tenant_id == tenant_id, _D.webhook_id == webhook_id)
            )
        return _webhook(row)

    async def rotate_secret(
        self,
        tenant_id: str,
        webhook_id: str,
        *,
        current_version: int,
        secret: SealedSecret,
        at: datetime,
        previous_until: datetime,
    ) -> Webhook | None:
        """Make `secret` the signing secret if the current one is still `current_version`; the current one
        signs too until `previous_until`. None when the webhook is gone or was rotated meanwhile."""
        async with self._store.write_transaction() as conn:
            row = (
                await conn.execute(
                    sa.update(webhooks)
                    .where(
                        _W.tenant_id == tenant_id,
                        _W.webhook_id == webhook_id,
                        _W.secret_version == current_version,
                    )
                    .values(
                        previous_sealed=_W.secret_sealed,
                        previous_version=_W.secret_version,
                        previous_data_key_version=_W.data_key_version,
                        previous_expires_at=previous_until,
                        secret_sealed=secret.sealed,
                        secret_version=secret.version,
                        data_key_version=secret.data_key_version,
                        updated_at=at,
                    )
                    .returning(*webhooks.c)
                )
            ).first()
        return None if row is None else _webhook(row)

    async def enable_webhook(self, tenant_id: str, webhook_id: str, *, at: datetime) -> Webhook | None:
        """Enable a webhook again, its failing streak forgotten; None when there is no such webhook."""
        async with self._store.write_transaction() as conn:
            row = (
                await conn.execute(
                    sa.update(webhooks)
                    .where(_W.tenant_id == tenant_id, _W.webhook_id == webhook_id)
                    .values(enabled=True, disabled_reason=None, failing_since=None, updated_at=at)
                    .returning(*webhooks.c)
                )
            ).first()
        return None if row is None else _webhook(row)

    # deliveries

    async def queue_test(
        self, tenant_id: str, webhook_id: str, *, data: dict[str, Any], at: datetime
    ) -> Delivery | None:
        """Record a `webhook.test` event and its delivery to this webhook only; None when there is no such
        webhook."""
        async with self._store.write_transaction() as conn:
            found = (
                await conn.execute(
                    sa.select(_W.webhook_id)
                    .where(_W.tenant_id == tenant_id, _W.webhook_id == webhook_id)
                    .with_for_update(read=True)  # not deleted until its test delivery is in
                )
            ).first()
            if found is None:
                return None
            event = event_row(tenant_id, WEBHOOK_TEST, data, at=at) | {"delivered_at": at}
            await conn.execute(sa.insert(events).values(**event))
            row = _delivery_row(tenant_id, webhook_id, event, at=at)
            await conn.execute(sa.insert(webhook_deliveries).values(**row))
            conn.wrote_events = True
        return _delivery(row, ())

    async def fan_out(self, *, now: datetime, limit: int, probe: bool = True) -> int:
        """Turn up to `limit` events not fanned out yet (of any tenant, oldest first) into one delivery
        per subscribed, enabled webhook that existed when the event was recorded, and mark them fanned
        out, in one transaction. Replicas fan out disjoint events (`SKIP LOCKED`); a delivery is made
        once per (event, webhook) whatever happens. Returns how many events it took."""
        e = events.c
        if probe:  # an idle poll costs one read, no write transaction
            async with self._store.read_connection() as reader:
                if (
                    await reader.execute(sa.select(e.event_id).where(e.delivered_at.is_(None)).limit(1))
                ).first() is None:
                    return 0
        async with self._store.write_transaction() as conn:
            found = (
                await conn.execute(
                    sa.select(e.tenant_id, e.event_id, e.type, e.payload, e.created_at)
                    .where(e.delivered_at.is_(None))
                    .order_by(e.created_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not found:
                return 0
            tenants = sorted({row.tenant_id for row in found})
            hooks: dict[str, list[Webhook]] = {}
            # Shared locks: a webhook deleted meanwhile waits for these deliveries and deletes them too.
            for row in await conn.execute(
                sa.select(webhooks)
                .where(_W.tenant_id.in_(tenants), _W.enabled.is_(True))
                .order_by(_W.tenant_id, _W.webhook_id)
                .with_for_update(read=True)
            ):
                hooks.setdefault(row.tenant_id, []).append(_webhook(row))
            rows = [
                _delivery_row(event.tenant_id, hook.webhook_id, event._asdict(), at=now)
                for event in found
                for hook in hooks.get(event.tenant_id, ())
                if hook.wants(event.type) and hook.created_at <= event.created_at
            ]
            if rows:
                await conn.execute(
                    self._store.insert(webhook_deliveries)
                    .values(rows)
                    .on_conflict_do_nothing(index_elements=["tenant_id", "webhook_id", "event_id"])
                )
            await conn.execute(
                sa.update(events)
                .where(_pairs_in(e.tenant_id, e.event_id, [(row.tenant_id, row.event_id) for row in found]))
                .values(delivered_at=now)
            )
        return len(found)

    async def claim(self, *, now: datetime, until: datetime, limit: int, probe: bool = True) -> list[Claimed]:
        """Lease up to `limit` due deliveries (pending, due, and not leased or whose lease ran out) until
        `until`, committed before any is sent. On PostgreSQL rows another claim holds are skipped, not
        waited for; on SQLite the one writer makes the conditional UPDATE the whole claim."""
        lease = ids.random_token(24)
        ready = (
            _D.status == "pending",
            _D.next_attempt_at <= now,
            sa.or_(_D.claimed_until.is_(None), _D.claimed_until <= now),
        )
        if probe:  # an idle poll costs one read, no write transaction
            async with self._store.read_connection() as reader:
                if (await reader.execute(sa.select(_D.delivery_id).where(*ready).limit(1))).first() is None:
                    return []
        due = (
            sa.select(_D.tenant_id, _D.delivery_id)
            .where(*ready)
            .order_by(_D.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self._store.write_transaction() as conn:
            rows = (
                await conn.execute(
                    sa.update(webhook_deliveries)
                    .where(sa.tuple_(_D.tenant_id, _D.delivery_id).in_(due))
                    .values(claimed_until=until, lease=lease)
                    .returning(*webhook_deliveries.c)
                )
            ).all()
        return [Claimed(_delivery(row._asdict(), ()), lease, until) for row in rows]

    async def targets(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Target]:
        """The send targets of (tenant, webhook) pairs that still exist."""
        if not keys:
            return {}
        async with self._store.read_connection() as conn:
            rows = await conn.execute(sa.select(webhooks).where(_pairs_in(_W.tenant_id, _W.webhook_id, keys)))
            return {(row.tenant_id, row.webhook_id): _target(row) for row in rows}

    async def record_attempt(
        self,
        claimed: Claimed,
        attempt: Attempt,
        *,
        retries: int,
        disabled_reason: Callable[[datetime], str],
    ) -> bool:
        """Record an attempt under the claim's lease: the delivery's new state, the attempt, and the
        webhook's failing streak (ended by a success; a streak of `DISABLE_AFTER` disables the webhook,
        with `disabled_reason(failing_since)`). False, and nothing recorded, when the lease was lost.

        Lock order, as in `delete_webhook`: the webhook row, then the delivery's.
        """
        try:
            return await self._record_attempt(
                claimed, attempt, retries=retries, disabled_reason=disabled_reason
            )
        except _LeaseLost:  # raised inside the transaction: nothing of it committed
            return False

    async def _record_attempt(
        self,
        claimed: Claimed,
        attempt: Attempt,
        *,
        retries: int,
        disabled_reason: Callable[[datetime], str],
    ) -> bool:
        d = claimed.delivery
        if attempt.succeeded:
            status = "delivered"
        else:
            status = "pending" if attempt.next_attempt_at is not None else "failed"
        one = (_W.tenant_id == d.tenant_id, _W.webhook_id == d.webhook_id)
        async with self._store.write_transaction() as conn:
            streak = None
            if attempt.succeeded:
                await conn.execute(
                    sa.update(webhooks).where(*one, _W.failing_since.isnot(None)).values(failing_since=None)
                )
            else:
                first_failure = sa.literal(attempt.attempted_at, Micros())
                streak = (
                    await conn.execute(
                        sa.update(webhooks)
                        .where(*one)
                        .values(failing_since=sa.func.coalesce(_W.failing_since, first_failure))
                        .returning(_W.failing_since, _W.enabled)
                    )
                ).first()
            updated = await conn.execute(
                sa.update(webhook_deliveries)
                .where(
                    _D.tenant_id == d.tenant_id, _D.delivery_id == d.delivery_id, _D.lease == claimed.lease
                )
                .values(
                    status=status,
                    attempts=attempt.number,
                    retries=retries,
                    next_attempt_at=attempt.next_attempt_at,
                    claimed_until=None,
                    lease=None,
                    updated_at=attempt.attempted_at,
                )
            )
            if updated.rowcount != 1:
                raise _LeaseLost
            await conn.execute(
                sa.insert(webhook_attempts).values(
                    tenant_id=d.tenant_id,
                    delivery_id=d.delivery_id,
                    number=attempt.number,
                    attempted_at=attempt.attempted_at,
                    status_code=attempt.status_code,
                    latency_ms=attempt.latency_ms,
                    error=attempt.error,
                    next_attempt_at=attempt.next_attempt_at,
                )
            )
            if (
                streak is not None
                and streak.enabled
                and should_disable(streak.failing_since, now=attempt.attempted_at)
            ):
                await conn.execute(
                    sa.update(webhooks)
                    .where(*one)
                    .values(
                        enabled=False,
                        disabled_reason=disabled_reason(streak.failing_since),
                        updated_at=attempt.attempted_at,
                    )
                )
        return True

    async def list_deliveries(
        self,
        tenant_id: str,
        *,
        webhook_id: str | None,
        status: str | None,
        limit: int,
        after: Position | None,
    ) -> Page[Delivery]:
        """Newest first, each with its attempts (oldest first)."""
        query = sa.select(webhook_deliveries).where(_D.tenant_id == tenant_id)
        if webhook_id is not None:
            query = query.where(_D.webhook_id == webhook_id)
        if status is not None:
            query = query.where(_D.status == status)
        if after is not None:
            at = from_epoch_micros(after.sort_key)
            query = query.where(
                sa.or_(_D.created_at < at, sa.and_(_D.created_at == at, _D.delivery_id < after.id))
            )
        query = query.order_by(_D.created_at.desc(), _D.delivery_id.desc()).limit(limit + 1)
        async with self._store.read_connection() as conn:
            rows = [row._asdict() for row in (await conn.execute(query)).all()]
            page = rows[:limit]
            history = await _attempts(conn, tenant_id, [row["delivery_id"] for row in page])
        items = [_delivery(row, history.get(row["delivery_id"], ())) for row in page]
        last = items[-1] if len(rows) > limit else None
        return Page(
            items, None if last is None else Position(epoch_micros(last.created_at), last.delivery_id)
        )

    async def get_delivery(self, tenant_id: str, delivery_id: str) -> Delivery | None:
        async with self._store.read_connection() as conn:
            row = await _find_delivery(conn, tenant_id, delivery_id)
            if row is None:
                return None
            history = await _attempts(conn, tenant_id, [delivery_id])
        return _delivery(row._asdict(), history.get(delivery_id, ()))

    async def redeliver(self, tenant_id: str, delivery_id: str, *, now: datetime) -> Delivery | None:
        """Queue a delivery again, due now, at the start of the retry schedule: a delivered or failed one,
        or a pending one not being sent this moment (one that is keeps its attempt). None when there is
        no such delivery."""
        async with self._store.write_transaction() as conn:
            row = (
                await conn.execute(
                    sa.update(webhook_deliveries)
                    .where(
                        _D.tenant_id == tenant_id,
                        _D.delivery_id == delivery_id,
                        sa.or_(_D.claimed_until.is_(None), _D.claimed_until <= now),
                    )
                    .values(
                        status="pending",
                        retries=0,
                        next_attempt_at=now,
                        claimed_until=None,
                        lease=None,
                        updated_at=now,
                    )
                    .returning(*webhook_deliveries.c)
                )
            ).first()
            if row is None:  # none, or in flight: as it is
                row = await _find_delivery(conn, tenant_id, delivery_id)
                if row is None:
                    return None
            else:
                conn.wrote_events = True  # wakes the worker as a new event would
            history = await _attempts(conn, tenant_id, [delivery_id])
        return _delivery(row._asdict(), history.get(delivery_id, ()))


async def _find_delivery(conn: Executes, tenant_id: str, delivery_id: str) -> sa.Row[Any] | None:
    query = sa.select(webhook_deliveries).where(_D.tenant_id == tenant_id, _D.delivery_id == delivery_id)
    return (await conn.execute(query)).first()


class _LeaseLost(Exception):
    pass


def _one_webhook(tenant_id: str, webhook_id: str) -> sa.Select[Any]:
    return sa.select(webhooks).where(_W.tenant_id == tenant_id, _W.webhook_id == webhook_id)


async def _attempts(conn: Any, tenant_id: str, delivery_ids: list[str]) -> dict[str, tuple[Attempt, ...]]:
    if not delivery_ids:
        return {}
    a = webhook_attempts.c
    rows = await conn.execute(
        sa.select(webhook_attempts)
        .where(a.tenant_id == tenant_id, a.delivery_id.in_(delivery_ids))
        .order_by(a.delivery_id, a.number)
    )
    found: dict[str, list[Attempt]] = {}
    for row in rows:
        found.setdefault(row.delivery_id, []).append(
            Attempt(
                number=int(row.number),
                attempted_at=row.attempted_at,
                status_code=None if row.status_code is None else int(row.status_code),
                latency_ms=int(row.latency_ms),
                error=row.error,
                next_attempt_at=row.next_attempt_at,
            )
        )
    return {key: tuple(value) for key, value in found.items()}


def _delivery_row(tenant_id: str, webhook_id: str, event: dict[str, Any], *, at: datetime) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "delivery_id": ids.new_id(DELIVERY),
        "webhook_id": webhook_id,
        "event_id": event["event_id"],
        "event_type": event["type"],
        "body": event_body(event["type"], event["created_at"], event["payload"]),
        "status": "pending",
        "attempts": 0,
        "retries": 0,
        "next_attempt_at": at,
        "claimed_until": None,
        "lease": None,
        "created_at": at,
        "updated_at": at,
    }


def _delivery(row: dict[str, Any], history: tuple[Attempt, ...]) -> Delivery:
    return Delivery(
        tenant_id=row["tenant_id"],
        delivery_id=row["delivery_id"],
        webhook_id=row["webhook_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        body=row["body"],
        status=row["status"],
        attempts=int(row["attempts"]),
        retries=int(row["retries"]),
        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        history=history,
    )


def _webhook(row: Any) -> Webhook:
    return Webhook(
        tenant_id=row.tenant_id,
        webhook_id=row.webhook_id,
        url=row.url,
        events=tuple(row.events),
        description=row.description,
        enabled=bool(row.enabled),
        disabled_reason=row.disabled_reason,
        failing_since=row.failing_since,
        created_at=row.created_at,
        updated_at=row.updated_at,
        previous_secret_expires_at=row.previous_expires_at,
    )


def _target(row: Any) -> Target:
    previous = None
    if row.previous_sealed is not None:
        previous = SealedSecret(
            bytes(row.previous_sealed), int(row.previous_version), int(row.previous_data_key_version)
        )
    return Target(
        tenant_id=row.tenant_id,
        webhook_id=row.webhook_id,
        url=row.url,
        current=SealedSecret(bytes(row.secret_sealed), int(row.secret_version), int(row.data_key_version)),
        previous=previous,
        previous_expires_at=row.previous_expires_at,
    )


def _pairs_in(
    tenant: sa.ColumnElement[str], key: sa.ColumnElement[str], pairs: Sequence[tuple[str, str]]
) -> sa.ColumnElement[bool]:
    """Rows whose (tenant, key) is one of `pairs`, as `tenant = t AND key IN (…)` per tenant: SQLite scans
    the whole table for a row-value `IN` of two pairs or more, and the events table grows with the log."""
    by_tenant: dict[str, set[str]] = {}
    for tenant_id, key_id in pairs:
        by_tenant.setdefault(tenant_id, set()).add(key_id)
    return sa.or_(
        *(sa.and_(tenant == tenant_id, key.in_(sorted(ids))) for tenant_id, ids in sorted(by_tenant.items()))
    )
