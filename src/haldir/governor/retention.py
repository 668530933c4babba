"""The retention sweep: Idempotency-Keys past their TTL are deleted, payment authorizations past theirs
expire (their budget released, with a ledger entry), expired sessions leave this process's cache.

Every server process tries it now and then; one process of all replicas runs it at a time (the store's
sweep lock), and each expiry is a conditional update in the transaction of its entry, so even two
sweepers at once could not expire a payment twice. The ledger is never pruned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from haldir.core.clock import Clock
from haldir.core.payments import EXPIRED, Payment
from haldir.governor.budgets import record_settlement
from haldir.governor.ledger import Ledger
from haldir.governor.sessions import Sessions
from haldir.store.ports import PaymentStore, RetentionStore

BATCH = 500  # rows one step of the sweep takes on; the sweep goes on until a step finds fewer


@dataclass(frozen=True)
class Lifetimes:
    """How long what the sweep removes lives (HALDIR_IDEMPOTENCY_TTL_SECONDS and
    HALDIR_PAYMENT_AUTHORIZATION_TTL_SECONDS)."""

    idempotency_key: timedelta = timedelta(days=1)
    payment_authorization: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class Swept:
    """What one sweep did; `ran` is False when another sweeper held the lock."""

    ran: bool
    idempotency_keys_deleted: int = 0
    payments_expired: int = 0
    sessions_uncached: int = 0


class Retention:
    def __init__(
        self,
        *,
        retention_store: RetentionStore,
        payment_store: PaymentStore,
        sessions: Sessions,
        ledger: Ledger,
        clock: Clock,
        lifetimes: Lifetimes,
    ) -> None:
        self._store = retention_store
        self._payment_store = payment_store
        self._sessions = sessions
        self._ledger = ledger
        self._clock = clock
        self.lifetimes = lifetimes

    async def sweep(self) -> Swept:
        """Run the sweep unless another process or replica is running it."""
        uncached = self._sessions.uncache_expired()  # this process's own state: no lock needed
        async with self._store.sweep_lock() as held:
            if not held:
                return Swept(ran=False, sessions_uncached=uncached)
            keys = await self._delete_idempotency_keys()
            expired = await self._expire_payments()
        return Swept(
            ran=True, idempotency_keys_deleted=keys, payments_expired=expired, sessions_uncached=uncached
        )

    async def _delete_idempotency_keys(self) -> int:
        until = self._clock.now() - self.lifetimes.idempotency_key
        total = 0
        while True:
            deleted = await self._store.delete_idempotency_keys(created_until=until, limit=BATCH)
            total += deleted
            if deleted < BATCH:
                return total

    async def _expire_payments(self) -> int:
        expired = 0
        while True:
            until = self._clock.now() - self.lifetimes.payment_authorization
            lapsed = await self._store.lapsed_payments(created_until=until, limit=BATCH)
            step = sum([await self._expire(payment) for payment in lapsed])
            expired += step
            if len(lapsed) < BATCH or not step:
                return expired

    async def _expire(self, lapsed: Payment) -> bool:
        """Expire one authorization in one transaction with its ledger entry: what costs were reported
        against it stays charged (as if captured for that much), the rest goes back to the budget.
        False when a capture, a void or another sweeper settled it first."""
        now = self._clock.now()
        ttl = self.lifetimes.payment_authorization
        async with self._payment_store.spend_transaction(lapsed.tenant_id) as tx:
            payment = await tx.payment(lapsed.payment_id)  # locked: one settlement wins
            if payment is None or not payment.lapsed(now, ttl):
                return False
            kept = payment.reported_micros
            settled = await tx.settle_payment(
                payment.payment_id, status=EXPIRED, captured_micros=kept, now=now
            )
            if settled is None:
                return False
            await record_settlement(
                tx,
                self._ledger,
                payment,
                settled,
                action="payment.expire",
                now=now,
                details={
                    "authorized_at": payment.created_at.isoformat(),
                    "ttl_seconds": int(ttl.total_seconds()),
                },
            )
        return True
