"""One spend ledger on both stores: payments and governed costs against race-free session budgets."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from haldir.clock import SystemClock
from haldir.core.keys import Principal
from haldir.core.ledger import EntryFilter
from haldir.core.pagination import encode_cursor
from haldir.core.sessions import Session
from haldir.errors import BudgetExceeded, Conflict, InvalidRequest, NotFound, ScopeDenied
from haldir.governor import Governor
from haldir.runtime import wire
from haldir.store.schema import events
from haldir.store.sql import SqlStore
from tests.store.processes import run_workers
from tests.support import FakeClock

pytestmark = pytest.mark.anyio

ACME = Principal.operator("acme")


@pytest.fixture(autouse=True)
async def _tenants(governor: Governor) -> None:
    for tenant in ("acme", "globex"):
        await governor.keys.create_key(Principal.operator(tenant), name="setup", scopes=["*"])


async def _session(
    governor: Governor, *, limit: str = "10.00", scopes: tuple[str, ...] = ("spend",)
) -> Session:
    created = await governor.sessions.create_session(
        ACME, agent_id="agent-7", scopes=list(scopes), spend_limit=Decimal(limit)
    )
    return created.value


async def _spent(governor: Governor, session_id: str) -> Decimal:
    return Decimal((await governor.sessions.get_session(ACME, session_id)).spent_micros) / 1_000_000


async def _entries(governor: Governor, session_id: str) -> list[dict[str, Any]]:
    page = await governor.ledger.list_entries(
        ACME, where=EntryFilter(session_id=session_id), limit=200, order="asc"
    )
    return [entry.record for entry in page.entries]


async def _reconciles(governor: Governor, session_id: str) -> Decimal:
    """The session's `spent`, after checking the ledger's charges and the spend report agree with it."""
    spent = await _spent(governor, session_id)
    charged = sum((Decimal(r["charged_usd"]) for r in await _entries(governor, session_id)), Decimal(0))
    report = await governor.ledger.spend(ACME, session_id=session_id)
    assert charged == spent == report.total == report.by_session.get(session_id, Decimal(0))
    return spent


async def test_an_authorization_reserves_its_amount_and_returns_the_remaining_budget(
    governor: Governor,
) -> None:
    session = await _session(governor)
    outcome = await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="2.50")
    authorization = outcome.value
    assert authorization.payment.payment_id.startswith("pay_")
    assert authorization.payment.status == "authorized"
    assert authorization.remaining_micros == 7_500_000
    assert await _reconciles(governor, session.session_id) == Decimal("2.5")
    (record,) = await _entries(governor, session.session_id)
    assert (record["tool"], record["action"], record["status"]) == ("payments", "payment.authorize", "ok")
    assert record["details"]["authorization_id"] == authorization.payment.payment_id


async def test_an_authorization_over_the_budget_is_refused_with_the_remaining_budget_and_recorded(
    governor: Governor,
) -> None:
    session = await _session(governor, limit="3.00")
    await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="2.00")
    with pytest.raises(BudgetExceeded) as refused:
        await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="1.01")
    assert refused.value.details["remaining_budget"] == "1.00"
    assert await _reconciles(governor, session.session_id) == Decimal(2)
    last = (await _entries(governor, session.session_id))[-1]
    assert (last["status"], last["cost_usd"], last["charged_usd"]) == ("denied", "1.01", "0.00")
    assert "1.00 USD of budget left" in last["details"]["refused"]


async def test_a_session_without_the_spend_scope_cannot_authorize_and_the_refusal_is_recorded(
    governor: Governor,
) -> None:
    session = await _session(governor, scopes=("read",))
    with pytest.raises(ScopeDenied, match="lacks scope 'spend'"):
        await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="1")
    (record,) = await _entries(governor, session.session_id)
    assert (record["status"], record["charged_usd"]) == ("denied", "0.00")


async def test_a_revoked_or_expired_session_authorizes_nothing(governor: Governor, clock: FakeClock) -> None:
    revoked = await _session(governor)
    await governor.sessions.revoke_session(ACME, revoked.session_id)
    with pytest.raises(ScopeDenied, match="revoked"):
        await governor.budgets.authorize_payment(ACME, session_id=revoked.session_id, amount="1")
    expired = await _session(governor)
    clock.advance(7200)
    with pytest.raises(ScopeDenied, match="expired"):
        await governor.budgets.authorize_payment(ACME, session_id=expired.session_id, amount="1")
    assert await _reconciles(governor, expired.session_id) == 0


async def test_a_smaller_capture_releases_the_difference_and_a_void_releases_everything(
    governor: Governor,
) -> None:
    session = await _session(governor)
    first = (await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="4")).value
    second = (await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="3")).value
    captured = await governor.budgets.capture_payment(ACME, first.payment.payment_id, amount="2.25")
    assert (captured.status, captured.captured_micros) == ("captured", 2_250_000)
    voided = await governor.budgets.void_payment(ACME, second.payment.payment_id)
    assert voided.status == "voided"
    assert await _reconciles(governor, session.session_id) == Decimal("2.25")
    charges = [(r["action"], r["charged_usd"]) for r in await _entries(governor, session.session_id)]
    assert charges == [
        ("payment.authorize", "4.00"),
        ("payment.authorize", "3.00"),
        ("payment.capture", "-1.75"),
        ("payment.void", "-3.00"),
    ]


async def test_a_payment_is_settled_once(governor: Governor) -> None:
    session = await _session(governor)
    payment = (
        await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="4")
    ).value.payment
    await governor.budgets.capture_payment(ACME, payment.payment_id)
    with pytest.raises(Conflict, match="captured"):
        await governor.budgets.capture_payment(ACME, payment.payment_id)
    with pytest.raises(Conflict, match="captured"):
        await governor.budgets.void_payment(ACME, payment.payment_id)
    other = (await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="1")).value
    with pytest.raises(InvalidRequest, match="capture amount"):
        await governor.budgets.capture_payment(ACME, other.payment.payment_id, amount="1.01")
    with pytest.raises(NotFound):
        await governor.budgets.capture_payment(ACME, "pay_doesnotexist")
    assert await _reconciles(governor, session.session_id) == Decimal(5)


async def test_a_concurrent_capture_and_void_of_one_payment_settle_it_once(governor: Governor) -> None:
    session = await _session(governor)
    payment = (
        await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="4")
    ).value.payment
    results: list[str] = []

    async def settle(how: str) -> None:
        try:
            if how == "capture":
                await governor.budgets.capture_payment(ACME, payment.payment_id, amount="1")
            else:
                await governor.budgets.void_payment(ACME, payment.payment_id)
            results.append(how)
        except Conflict:
            results.append("conflict")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for how in ("capture", "void") * 5:
                tg.start_soon(settle, how)
    assert results.count("conflict") == 9
    final = await governor.budgets.get_payment(ACME, payment.payment_id)
    assert await _reconciles(governor, session.session_id) == (
        Decimal(1) if final.status == "captured" else 0
    )


async def test_a_cost_no_authorization_covers_is_added_to_spent_within_the_limit(governor: Governor) -> None:
    session = await _session(governor, limit="1.00", scopes=("execute",))
    entry = await governor.budgets.log_action(
        ACME, session_id=session.session_id, tool="search", action="q", cost_usd="0.60"
    )
    assert (entry.record["charged_usd"], entry.record["flagged"]) == ("0.60", False)
    assert "covered_by" not in entry.record
    assert await _reconciles(governor, session.session_id) == Decimal("0.6")


async def test_a_cost_past_the_limit_is_kept_flagged_over_budget_and_announced(
    governor: Governor, store: SqlStore
) -> None:
    session = await _session(governor, limit="1.00", scopes=("execute",))
    await governor.budgets.log_action(
        ACME, session_id=session.session_id, tool="search", action="q", cost_usd="0.60"
    )
    entry = await governor.budgets.log_action(
        ACME, session_id=session.session_id, tool="search", action="q", cost_usd="0.41"
    )
    assert entry.record["status"] == "ok"
    assert entry.record["charged_usd"] == "0.41"
    assert entry.record["flagged"] is True
    assert entry.record["flag_reason"].startswith("over_budget: 0.41 USD not covered")
    assert "1.01 USD spent, past its limit of 1.00 USD" in entry.record["flag_reason"]
    assert await _reconciles(governor, session.session_id) == Decimal("1.01")
    current = await governor.sessions.get_session(ACME, session.session_id)
    assert current.remaining_micros == 0
    (flagged,) = await _events(store, "audit.flagged")
    assert flagged["entry_id"] == entry.entry_id
    (exhausted,) = await _events(store, "budget.exhausted")  # once, on the charge that crossed
    assert exhausted["entry_id"] == entry.entry_id
    await governor.budgets.log_action(
        ACME, session_id=session.session_id, tool="search", action="q", cost_usd="1"
    )
    assert len(await _events(store, "budget.exhausted")) == 1
    with pytest.raises(BudgetExceeded):  # what must never overspend still refuses
        await governor.budgets.authorize_payment(
            ACME, session_id=(await _session(governor, limit="1.00")).session_id, amount="1.01"
        )


async def test_a_cost_on_a_session_without_a_limit_is_kept_and_flagged(governor: Governor) -> None:
    created = await governor.sessions.create_session(ACME, agent_id="free", scopes=["read"])
    entry = await governor.budgets.log_action(
        ACME, session_id=created.value.session_id, tool="llm", action="complete", cost_usd="0.02"
    )
    assert (entry.record["charged_usd"], entry.record["flagged"]) == ("0.02", True)
    assert "past its limit of 0.00 USD" in entry.record["flag_reason"]
    assert await _reconciles(governor, created.value.session_id) == Decimal("0.02")


async def test_a_cost_logged_after_the_session_expired_is_kept_charged_and_flagged(
    governor: Governor, clock: FakeClock
) -> None:
    session = await _session(governor, limit="10.00", scopes=("execute",))
    clock.advance(3601)
    entry = await governor.budgets.log_action(
        ACME, session_id=session.session_id, tool="search", action="q", cost_usd="1.00"
    )
    assert entry.record["charged_usd"] == "1.00"
    assert (
        entry.record["flag_reason"]
        == f"a cost of 1.00 USD was logged after session {session.session_id} expired"
    )
    assert await _reconciles(governor, session.session_id) == Decimal(1)


async def test_authorize_then_log_the_same_amount_counts_the_money_once(governor: Governor) -> None:
    session = await _session(governor, limit="50.00")
    authorized = await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="29.99")
    payment_id = authorized.value.payment.payment_id
    entry = await governor.budgets.log_action(
        ACME, session_id=session.session_id, tool="stripe", action="charge", cost_usd="29.99"
    )
    assert entry.record["charged_usd"] == "0.00"
    assert entry.record["covered_by"] == [{"authorization_id": payment_id, "amount_usd": "29.99"}]
    assert "authorization_id" not in entry.record  # only when the caller named one
    assert entry.record["flagged"] is False
    assert (await governor.budgets.get_payment(ACME, payment_id)).reported_micros == 29_990_000
    assert await _reconciles(governor, session.session_id) == Decimal("29.99")
    again = await governor.budgets.log_action(
        ACME, session_id=session.session_id, tool="stripe", action="charge", cost_usd="29.99"
    )
    assert again.record["charged_usd"] == "29.99"  # the authorization is used up: charged, not matched
    assert again.record["flagged"] is True
    assert await _reconciles(governor, session.session_id) == Decimal("59.98")


async def test_the_oldest_authorization_holding_the_whole_cost_covers_it_else_the_oldest_ones_share_it(
    governor: Governor, clock: FakeClock
) -> None:
    session = await _session(governor, limit="100.00")
    small = (
        await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="10")
    ).value.payment
    clock.advance(1)  # oldest first: by creation time, then by id
    large = (
        await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="50")
    ).value.payment
    thirty = await governor.budgets.log_action(
        ACME, session_id=session.session_id, tool="t", action="a", cost_usd="30"
    )
    assert thirty.record["covered_by"] == [{"authorization_id": large.payment_id, "amount_usd": "30.00"}]
    ten = await governor.budgets.log_action(
        ACME, session_id=session.session_id, tool="t", action="a", cost_usd="10"
    )
    assert ten.record["covered_by"] == [{"authorization_id": small.payment_id, "amount_usd": "10.00"}]
    rest = await governor.budgets.log_action(
        ACME, session_id=session.session_id, tool="t", action="a", cost_usd="25"
    )
    assert rest.record["covered_by"] == [{"authorization_id": large.payment_id, "amount_usd": "20.00"}]
    assert rest.record["charged_usd"] == "5.00"
    assert await _reconciles(governor, session.session_id) == Decimal(65)


async def test_a_cost_matched_to_its_authorization_is_not_counted_twice(governor: Governor) -> None:
    session = await _session(governor)
    payment = (
        await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="5")
    ).value.payment
    entry = await governor.budgets.log_action(
        ACME,
        session_id=session.session_id,
        tool="stripe",
        action="charge",
        cost_usd="3.00",
        authorization_id=payment.payment_id,
    )
    assert entry.record["authorization_id"] == payment.payment_id
    assert entry.record["charged_usd"] == "0.00"
    assert await _reconciles(governor, session.session_id) == Decimal(5)
    beyond = await governor.budgets.log_action(
        ACME,
        session_id=session.session_id,
        tool="stripe",
        action="charge",
        cost_usd="2.01",
        authorization_id=payment.payment_id,
    )
    assert beyond.record["covered_by"] == [{"authorization_id": payment.payment_id, "amount_usd": "2.00"}]
    assert (beyond.record["charged_usd"], beyond.record["flagged"]) == ("0.01", False)
    assert await _reconciles(governor, session.session_id) == Decimal("5.01")
    with pytest.raises(Conflict, match="capture it instead"):
        await governor.budgets.void_payment(ACME, payment.payment_id)
    with pytest.raises(InvalidRequest, match="already reported"):
        await governor.budgets.capture_payment(ACME, payment.payment_id, amount="4.99")
    await governor.budgets.capture_payment(ACME, payment.payment_id, amount="5")
    assert await _reconciles(governor, session.session_id) == Decimal("5.01")


async def test_a_named_authorization_covers_only_what_it_holds_and_the_rest_is_charged(
    governor: Governor,
) -> None:
    session = await _session(governor)
    named, other = [
        (
            await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="2")
        ).value.payment
        for _ in range(2)
    ]
    await governor.budgets.void_payment(ACME, named.payment_id)
    entry = await governor.budgets.log_action(
        ACME,
        session_id=session.session_id,
        tool="t",
        action="a",
        cost_usd="1.5",
        authorization_id=named.payment_id,
    )
    assert "covered_by" not in entry.record  # a voided authorization holds nothing; the other is not asked
    assert entry.record["charged_usd"] == "1.50"
    assert (await governor.budgets.get_payment(ACME, other.payment_id)).reported_micros == 0
    assert await _reconciles(governor, session.session_id) == Decimal("3.5")


async def test_50_concurrent_logs_against_one_authorization_count_each_cost_once(
    governor: Governor,
) -> None:
    session = await _session(governor, limit="5.00")
    payment = (
        await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="3.00")
    ).value.payment
    entries = []

    async def log(index: int) -> None:
        named = {"authorization_id": payment.payment_id} if index % 2 else {}
        entry = await governor.budgets.log_action(
            ACME, session_id=session.session_id, tool="t", action="a", cost_usd="0.10", **named
        )
        entries.append(entry.record)

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for index in range(50):
                tg.start_soon(log, index)
    covered = [sum((Decimal(p["amount_usd"]) for p in r.get("covered_by", [])), Decimal(0)) for r in entries]
    charged = [Decimal(r["charged_usd"]) for r in entries]
    assert len(entries) == 50
    assert {c + h for c, h in zip(covered, charged, strict=True)} == {Decimal("0.10")}  # each counted once
    assert sum(covered) == Decimal(3)  # the authorization covers exactly what it holds, once
    assert sum(charged) == Decimal(2)  # the rest is charged once: 50 x 0.10 = 5.00 in all
    assert (await governor.budgets.get_payment(ACME, payment.payment_id)).reported_micros == 3_000_000
    assert await _reconciles(governor, session.session_id) == Decimal(5)
    assert (await governor.ledger.verify_log(ACME)).ok


async def test_an_authorization_of_another_session_cannot_cover_a_cost(governor: Governor) -> None:
    payer, other = await _session(governor), await _session(governor)
    payment = (
        await governor.budgets.authorize_payment(ACME, session_id=payer.session_id, amount="5")
    ).value.payment
    with pytest.raises(NotFound):
        await governor.budgets.log_action(
            ACME,
            session_id=other.session_id,
            tool="t",
            action="a",
            cost_usd="1",
            authorization_id=payment.payment_id,
        )
    assert await _reconciles(governor, other.session_id) == 0
    with pytest.raises(NotFound):
        await governor.budgets.log_action(
            ACME, session_id=other.session_id, tool="t", action="a", cost_usd="1", authorization_id="pay_x"
        )


async def test_budget_exhausted_is_recorded_when_the_remaining_budget_reaches_zero(
    governor: Governor, store: SqlStore
) -> None:
    session = await _session(governor, limit="2.00")
    await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="1.50")
    assert await _exhausted_events(store) == []
    await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount="0.50")
    (payload,) = await _exhausted_events(store)
    assert payload["session_id"] == session.session_id
    assert (payload["spend_limit_usd"], payload["spent_usd"]) == ("2.00", "2.00")


async def _exhausted_events(store: SqlStore) -> list[dict[str, Any]]:
    return await _events(store, "budget.exhausted")


async def _events(store: SqlStore, kind: str) -> list[dict[str, Any]]:
    async with store.read_connection() as conn:
        rows = await conn.execute(sa.select(events.c.payload).where(events.c.type == kind))
        return [dict(row.payload) for row in rows]


async def test_a_replayed_authorization_returns_the_first_and_charges_once(governor: Governor) -> None:
    session = await _session(governor, limit="3")
    first = await governor.budgets.authorize_payment(
        ACME, session_id=session.session_id, amount="2", idempotency_key="k1"
    )
    again = await governor.budgets.authorize_payment(
        ACME, session_id=session.session_id, amount="2", idempotency_key="k1"
    )
    assert again.replayed
    assert not first.replayed
    assert again.value.payment.payment_id == first.value.payment.payment_id
    with pytest.raises(BudgetExceeded):
        await governor.budgets.authorize_payment(
            ACME, session_id=session.session_id, amount="2", idempotency_key="k2"
        )
    with pytest.raises(BudgetExceeded, match="was refused"):
        await governor.budgets.authorize_payment(
            ACME, session_id=session.session_id, amount="2", idempotency_key="k2"
        )
    assert await _reconciles(governor, session.session_id) == Decimal(2)


async def test_payments_are_listed_newest_first_by_session(governor: Governor, clock: FakeClock) -> None:
    session, other = await _session(governor), await _session(governor)
    made = []
    for amount in ("1", "2", "3"):
        made.append(
            (
                await governor.budgets.authorize_payment(ACME, session_id=session.session_id, amount=amount)
            ).value
        )
        clock.advance(1)
    await governor.budgets.authorize_payment(ACME, session_id=other.session_id, amount="1")
    first = await governor.budgets.list_payments(ACME, session_id=session.session_id, limit=2)
    assert [p.payment_id for p in first.items] == [made[2].payment.payment_id, made[1].payment.payment_id]
    rest = await governor.budgets.list_payments(
        ACME, session_id=session.session_id, cursor=encode_cursor(first.next)
    )
    assert [p.payment_id for p in rest.items] == [made[0].payment.payment_id]
    assert len((await governor.budgets.list_payments(ACME)).items) == 4
    assert (await governor.budgets.list_payments(Principal.operator("globex"))).items == []


async def test_200_concurrent_one_dollar_authorizations_against_ten_dollars_authorize_exactly_10(
    governor: Governor,
) -> None:
    session = await _session(governor, limit="10.00")
    authorized: list[str] = []
    refused = 0

    async def pay() -> None:
        nonlocal refused
        try:
            outcome = await governor.budgets.authorize_payment(
                ACME, session_id=session.session_id, amount="1.00"
            )
            authorized.append(outcome.value.payment.payment_id)
        except BudgetExceeded:
            refused += 1

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(pay)
    assert (len(set(authorized)), refused) == (10, 190)
    assert await _reconciles(governor, session.session_id) == Decimal(10)
    records = await _entries(governor, session.session_id)
    assert [r["status"] for r in records].count("ok") == 10
    assert [r["status"] for r in records].count("denied") == 190
    assert (await governor.ledger.verify_log(ACME)).ok


async def test_200_authorizations_from_4_processes_on_postgresql_never_overspend(
    postgres_url: str, tmp_path: Path
) -> None:
    store = SqlStore.open(postgres_url, pool_size=2)
    try:
        governor = wire(store=store, clock=SystemClock())
        await governor.keys.create_key(ACME, name="setup", scopes=["*"])
        session = (
            await governor.sessions.create_session(
                ACME, agent_id="payer", scopes=["spend"], spend_limit=Decimal(10)
            )
        ).value
        commands = [["tests.store.payment_worker", postgres_url, "acme", session.session_id, "50"]] * 4
        results = [json.loads(line) for line in await run_workers(commands, tmp_path)]
        authorized = [pid for result in results for pid in result["authorized"]]
        assert len(set(authorized)) == len(authorized) == 10
        assert sum(result["refused"] for result in results) == 190
        assert await _reconciles(governor, session.session_id) == Decimal(10)
        assert (await governor.ledger.verify_log(ACME)).ok
    finally:
        await store.close()
