"""The retention sweep on both stores, on a fake clock: Idempotency-Keys and payment authorizations
expire, budgets are released once with a ledger entry, one sweeper runs at a time, the ledger stays."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from haldir.core.checkpoints import generate_signer
from haldir.core.keys import Principal
from haldir.core.ledger import EntryFilter
from haldir.errors import Conflict
from haldir.governor import Governor
from haldir.governor.retention import Lifetimes
from haldir.runtime import wire
from haldir.store.schema import idempotency_keys, ledger_entries
from haldir.store.sql import SqlStore
from tests.store.test_changes import _listening
from tests.support import FakeClock

pytestmark = pytest.mark.anyio

ACME = Principal.operator("acme")
DAY = 86400
WEEK = 7 * DAY


@pytest.fixture(autouse=True)
async def _tenant(governor: Governor) -> None:
    await governor.keys.create_key(ACME, name="setup", scopes=["*"])


async def _session_id(governor: Governor, *, limit: str = "100.00") -> str:
    created = await governor.sessions.create_session(
        ACME, agent_id="agent-7", scopes=["spend"], ttl=30 * DAY, spend_limit=Decimal(limit)
    )
    return created.value.session_id


async def _authorize(governor: Governor, session_id: str, amount: str) -> str:
    outcome = await governor.budgets.authorize_payment(ACME, session_id=session_id, amount=amount)
    return outcome.value.payment.payment_id


async def _records(governor: Governor, session_id: str) -> list[dict[str, Any]]:
    page = await governor.ledger.list_entries(
        ACME, where=EntryFilter(session_id=session_id), limit=200, order="asc"
    )
    return [entry.record for entry in page.entries]


async def _spent(governor: Governor, session_id: str) -> Decimal:
    """The session's `spent`, after checking that its ledger entries' charges add up to it."""
    session = await governor.sessions.get_session(ACME, session_id)
    spent = Decimal(session.spent_micros) / 1_000_000
    charged = sum((Decimal(r["charged_usd"]) for r in await _records(governor, session_id)), Decimal(0))
    assert charged == spent
    return spent


def _expiries(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [record for record in records if record["action"] == "payment.expire"]


async def test_an_authorization_left_unsettled_expires_after_its_ttl_and_its_budget_is_released(
    governor: Governor, clock: FakeClock
) -> None:
    session_id = await _session_id(governor)
    payment_id = await _authorize(governor, session_id, "2.50")
    clock.advance(WEEK - 1)
    assert (await governor.retention.sweep()).payments_expired == 0
    assert await _spent(governor, session_id) == Decimal("2.50")

    clock.advance(1)
    swept = await governor.retention.sweep()

    assert swept.ran
    assert swept.payments_expired == 1
    payment = await governor.budgets.get_payment(ACME, payment_id)
    assert payment.status == "expired"
    assert await _spent(governor, session_id) == 0
    (expiry,) = _expiries(await _records(governor, session_id))
    assert (expiry["tool"], expiry["status"], expiry["charged_usd"]) == ("payments", "ok", "-2.50")
    assert expiry["details"]["authorization_id"] == payment_id
    assert expiry["details"]["ttl_seconds"] == WEEK
    assert (await governor.retention.sweep()).payments_expired == 0  # once


async def test_captured_and_voided_payments_never_expire(governor: Governor, clock: FakeClock) -> None:
    session_id = await _session_id(governor)
    captured = await _authorize(governor, session_id, "3.00")
    voided = await _authorize(governor, session_id, "4.00")
    await governor.budgets.capture_payment(ACME, captured, amount="1.00")
    await governor.budgets.void_payment(ACME, voided)
    clock.advance(4 * WEEK)
    assert (await governor.retention.sweep()).payments_expired == 0
    assert (await governor.budgets.get_payment(ACME, captured)).status == "captured"
    assert (await governor.budgets.get_payment(ACME, voided)).status == "voided"
    assert await _spent(governor, session_id) == Decimal("1.00")


async def test_capturing_or_voiding_a_lapsed_authorization_is_a_conflict_that_says_it_expired(
    governor: Governor, clock: FakeClock
) -> None:
    session_id = await _session_id(governor)
    payment_id = await _authorize(governor, session_id, "2.50")
    clock.advance(WEEK)
    # Lapsed, not yet swept: refused all the same, and nothing changes.
    with pytest.raises(Conflict, match=rf"payment {payment_id} expired: .* nor voided within 7 days"):
        await governor.budgets.capture_payment(ACME, payment_id)
    assert (await governor.budgets.get_payment(ACME, payment_id)).status == "authorized"
    await governor.retention.sweep()
    with pytest.raises(Conflict, match=rf"payment {payment_id} expired"):
        await governor.budgets.void_payment(ACME, payment_id)
    with pytest.raises(Conflict, match="Authorize again"):
        await governor.budgets.capture_payment(ACME, payment_id, amount="1.00")
    assert await _spent(governor, session_id) == 0


async def test_an_expired_authorization_keeps_the_costs_reported_against_it(
    governor: Governor, clock: FakeClock
) -> None:
    session_id = await _session_id(governor)
    payment_id = await _authorize(governor, session_id, "5.00")
    await governor.budgets.log_action(
        ACME,
        session_id=session_id,
        tool="stripe",
        action="charge",
        cost_usd="2.00",
        authorization_id=payment_id,
    )
    clock.advance(WEEK)
    assert (await governor.retention.sweep()).payments_expired == 1
    payment = await governor.budgets.get_payment(ACME, payment_id)
    assert (payment.status, payment.captured_micros) == ("expired", 2_000_000)
    assert await _spent(governor, session_id) == Decimal("2.00")
    # No later cost is matched to it: it is charged to the session instead.
    await governor.budgets.log_action(ACME, session_id=session_id, tool="stripe", action="x", cost_usd="1.00")
    assert (await governor.budgets.get_payment(ACME, payment_id)).reported_micros == 2_000_000
    assert await _spent(governor, session_id) == Decimal("3.00")


async def _key_count(store: SqlStore) -> int:
    async with store.read_connection() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(idempotency_keys))).scalar_one()
        )


async def test_idempotency_keys_are_forgotten_after_their_ttl(
    governor: Governor, store: SqlStore, clock: FakeClock
) -> None:
    async def create() -> Any:
        return await governor.sessions.create_session(
            ACME, agent_id="a", scopes=["read"], ttl=60, idempotency_key="create-1"
        )

    first = await create()
    clock.advance(DAY - 1)
    assert (await governor.retention.sweep()).idempotency_keys_deleted == 0
    again = await create()
    assert again.replayed
    assert again.value.session_id == first.value.session_id

    clock.advance(1)
    assert (await governor.retention.sweep()).idempotency_keys_deleted == 1
    assert await _key_count(store) == 0
    anew = await create()
    assert not anew.replayed
    assert anew.value.session_id != first.value.session_id


async def test_the_sweep_deletes_many_keys_in_batches(
    governor: Governor, store: SqlStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("haldir.governor.retention.BATCH", 3)
    for number in range(8):
        await governor.sessions.create_session(
            ACME, agent_id="a", scopes=["read"], idempotency_key=f"k-{number}"
        )
    clock.advance(DAY)
    assert (await governor.retention.sweep()).idempotency_keys_deleted == 8
    assert await _key_count(store) == 0


async def test_the_ledger_is_never_pruned(governor: Governor, store: SqlStore, clock: FakeClock) -> None:
    session_id = await _session_id(governor)
    await _authorize(governor, session_id, "1.00")
    await governor.budgets.log_action(ACME, session_id=session_id, tool="t", action="a", cost_usd="0")

    async def leaves() -> list[int]:
        async with store.read_connection() as conn:
            rows = await conn.execute(
                sa.select(ledger_entries.c.leaf_index)
                .where(ledger_entries.c.tenant_id == "acme")
                .order_by(ledger_entries.c.leaf_index)
            )
            return [row.leaf_index for row in rows]

    before = await leaves()
    for _ in range(3):
        clock.advance(400 * DAY)
        await governor.retention.sweep()
    after = await leaves()
    assert after[: len(before)] == before
    assert after == list(range(len(before) + 1))  # the one expiry entry added, nothing removed
    assert (await governor.ledger.verify_log(ACME)).ok


async def test_expired_sessions_leave_this_processs_cache(
    governor: Governor, store: SqlStore, clock: FakeClock
) -> None:
    async with anyio.create_task_group() as group:
        await _listening(group, store.changes)  # PostgreSQL: caches serve only while changes are heard
        short = await governor.sessions.create_session(ACME, agent_id="a", scopes=["read"], ttl=60)
        long = await governor.sessions.create_session(ACME, agent_id="a", scopes=["read"], ttl=3600)
        for created in (short, long):
            await governor.sessions.require_session(ACME, created.value.session_id)  # cached now
        clock.advance(60)
        assert (await governor.retention.sweep()).sessions_uncached == 1
        assert (await governor.retention.sweep()).sessions_uncached == 0
        group.cancel_scope.cancel()


@asynccontextmanager
async def _second(store_url: str, clock: FakeClock) -> AsyncIterator[tuple[SqlStore, Governor]]:
    """Another process's store and governor over the same database: its own engines and writer."""
    other = SqlStore.open(store_url, pool_size=5)
    try:
        yield other, wire(store=other, clock=clock, lifetimes=Lifetimes())
    finally:
        await other.close()


async def test_one_sweeper_runs_at_a_time(
    governor: Governor, store: SqlStore, store_url: str, clock: FakeClock
) -> None:
    session_id = await _session_id(governor)
    payment_id = await _authorize(governor, session_id, "1.00")
    clock.advance(WEEK)
    async with _second(store_url, clock) as (_, other):
        async with store.retention.sweep_lock() as held:
            assert held
            skipped = await other.retention.sweep()
        assert not skipped.ran
        assert (await governor.budgets.get_payment(ACME, payment_id)).status == "authorized"
        ran = await other.retention.sweep()
    assert ran.ran
    assert ran.payments_expired == 1


async def test_two_sweepers_at_once_expire_each_payment_once(
    governor: Governor,
    store: SqlStore,
    store_url: str,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even with the lock out of the way, each expiry is one conditional update in the transaction of
    its entry: one entry per payment, each budget released once."""

    @asynccontextmanager
    async def no_lock(_: object) -> AsyncIterator[bool]:
        yield True

    monkeypatch.setattr("haldir.store.retention.SqlRetention.sweep_lock", no_lock)
    session_id = await _session_id(governor, limit="1000.00")
    payment_ids = {await _authorize(governor, session_id, f"{n + 1}.00") for n in range(20)}
    clock.advance(WEEK)
    results: list[int] = []
    async with _second(store_url, clock) as (_, other):

        async def sweep(by: Governor) -> None:
            results.append((await by.retention.sweep()).payments_expired)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for by in (governor, other, governor, other):
                    group.start_soon(sweep, by)

    assert sum(results) == 20
    expiries = _expiries(await _records(governor, session_id))
    assert sorted(record["details"]["authorization_id"] for record in expiries) == sorted(payment_ids)
    assert await _spent(governor, session_id) == 0
    assert (await governor.ledger.verify_log(ACME)).ok


async def test_compliance_evidence_counts_expired_payments_with_what_they_kept(
    store: SqlStore, clock: FakeClock
) -> None:
    governor = wire(
        store=store, clock=clock, log_signer=generate_signer("haldir.test"), log_origin="haldir.test"
    )
    since = clock.now()
    session_id = await _session_id(governor)
    released = await _authorize(governor, session_id, "4.00")
    kept = await _authorize(governor, session_id, "3.00")
    await governor.budgets.log_action(
        ACME, session_id=session_id, tool="stripe", action="charge", cost_usd="1.25", authorization_id=kept
    )
    clock.advance(WEEK)
    assert (await governor.retention.sweep()).payments_expired == 2
    pack = await governor.evidence.compliance_evidence(ACME, since=since, until=clock.now())
    (spend,) = [section["facts"] for section in pack["sections"] if section["id"] == "spend_governance"]
    assert (spend["payments_expired"], spend["payments_expired_usd"]) == (2, "1.25")
    assert spend["payments_authorized"] == 0
    assert released != kept
