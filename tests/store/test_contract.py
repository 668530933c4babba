"""The storage contract: the same behaviour from SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from haldir.core.idempotency import claim
from haldir.core.keys import ApiKey, generate_key
from haldir.core.scopes import Scope
from haldir.core.sessions import Session
from haldir.errors import IdempotencyKeyReused
from haldir.store.migrate import head_revision
from haldir.store.schema import sessions
from haldir.store.sql import SqlStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 4, 5, 19, 0, 0, 123456, tzinfo=UTC)


def _key(tenant: str = "acme", *, at: datetime = T0) -> tuple[ApiKey, str]:
    new = generate_key()
    key = ApiKey(
        tenant_id=tenant, prefix=new.prefix, name="k", scopes=frozenset({"sessions:read"}), created_at=at
    )
    return key, new.hash


def _session(
    session_id: str, *, tenant: str = "acme", agent: str = "a", at: datetime = T0, ttl: int = 60
) -> Session:
    return Session(
        tenant_id=tenant,
        session_id=session_id,
        agent_id=agent,
        scopes=(Scope("read"), Scope("stripe", "refund")),
        spend_limit_micros=50_000_000,
        spent_micros=0,
        ttl=ttl,
        created_at=at,
    )


async def _tenant(store: SqlStore, tenant: str = "acme") -> None:
    key, key_hash = _key(tenant)
    await store.insert_key(key, key_hash=key_hash)


async def test_store_answers_and_is_at_the_latest_migration(store: SqlStore) -> None:
    await store.ping()
    assert await store.schema_revision() == head_revision()


async def test_session_round_trips_every_field_exactly(store: SqlStore) -> None:
    await _tenant(store)
    original = _session("ses_1")
    assert (await store.insert_session(original)).value == original
    loaded = await store.get_session("acme", "ses_1")
    assert loaded == original
    assert loaded is not None
    assert loaded.created_at.tzinfo is not None


async def test_sessions_are_invisible_to_other_tenants(store: SqlStore) -> None:
    await _tenant(store, "acme")
    await _tenant(store, "other")
    await store.insert_session(_session("ses_1", tenant="acme"))
    assert await store.get_session("other", "ses_1") is None
    assert await store.revoke_session("other", "ses_1", at=T0) is None
    page = await store.list_sessions("other", agent_id=None, active=None, now=T0, limit=10, after=None)
    assert page.items == []
    assert (await store.get_session("acme", "ses_1")) is not None


async def test_revoking_twice_keeps_the_first_revocation_time(store: SqlStore) -> None:
    await _tenant(store)
    await store.insert_session(_session("ses_1"))
    first = await store.revoke_session("acme", "ses_1", at=T0 + timedelta(seconds=1))
    second = await store.revoke_session("acme", "ses_1", at=T0 + timedelta(seconds=9))
    assert first is not None
    assert second is not None
    assert first.revoked_at == second.revoked_at == T0 + timedelta(seconds=1)


async def test_listing_pages_newest_first_without_gaps_or_repeats(store: SqlStore) -> None:
    await _tenant(store)
    for i in range(7):
        await store.insert_session(_session(f"ses_{i}", at=T0 + timedelta(seconds=i // 2)))
    seen: list[str] = []
    after = None
    while True:
        page = await store.list_sessions("acme", agent_id=None, active=None, now=T0, limit=3, after=after)
        seen += [s.session_id for s in page.items]
        if page.next is None:
            break
        after = page.next
    assert sorted(seen) == sorted(f"ses_{i}" for i in range(7))
    assert len(seen) == len(set(seen)) == 7
    created = [(await store.get_session("acme", s)).created_at for s in seen]  # type: ignore[union-attr]
    assert created == sorted(created, reverse=True)


async def test_listing_filters_by_agent_and_by_activity(store: SqlStore) -> None:
    await _tenant(store)
    await store.insert_session(_session("ses_a", agent="alpha"))
    await store.insert_session(_session("ses_b", agent="beta"))
    await store.insert_session(_session("ses_old", agent="alpha", at=T0 - timedelta(hours=1)))
    await store.insert_session(_session("ses_gone", agent="alpha"))
    await store.revoke_session("acme", "ses_gone", at=T0)

    alpha = await store.list_sessions("acme", agent_id="alpha", active=None, now=T0, limit=10, after=None)
    assert {s.session_id for s in alpha.items} == {"ses_a", "ses_old", "ses_gone"}
    later = T0 + timedelta(seconds=1)
    active = await store.list_sessions("acme", agent_id=None, active=True, now=later, limit=10, after=None)
    assert {s.session_id for s in active.items} == {"ses_a", "ses_b"}
    inactive = await store.list_sessions("acme", agent_id=None, active=False, now=later, limit=10, after=None)
    assert {s.session_id for s in inactive.items} == {"ses_old", "ses_gone"}


async def test_keys_are_found_by_prefix_listed_per_tenant_and_revoked(store: SqlStore) -> None:
    key, key_hash = _key("acme")
    other, other_hash = _key("other")
    await store.insert_key(key, key_hash=key_hash)
    await store.insert_key(other, key_hash=other_hash)

    assert await store.find_key(key.prefix) == (key, key_hash)
    assert [k.prefix for k in await store.list_keys("acme")] == [key.prefix]
    assert await store.revoke_key("other", key.prefix, at=T0) is None
    revoked = await store.revoke_key("acme", key.prefix, at=T0)
    assert revoked is not None
    assert revoked.revoked_at == T0


async def test_bootstrap_creates_a_tenant_once_even_when_raced(store: SqlStore) -> None:
    results: list[bool] = []

    async def attempt() -> None:
        key, key_hash = _key("default")
        results.append(await store.bootstrap_tenant(key, key_hash=key_hash))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(attempt)
    assert results.count(True) == 1
    assert len(await store.list_keys("default")) == 1


async def test_an_idempotency_key_creates_one_session_under_concurrency(store: SqlStore) -> None:
    await _tenant(store)
    request = claim("retry-1", operation="sessions.create", payload={"agent_id": "a"})
    outcomes = []

    async def attempt(i: int) -> None:
        outcomes.append(await store.insert_session(_session(f"ses_{i}"), idempotency=request))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(attempt, i)
    assert len({o.value.session_id for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) == 1
    async with store.engines.read.connect() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(sessions))).scalar()
    assert count == 1


async def test_an_idempotency_key_with_a_different_request_is_refused(store: SqlStore) -> None:
    await _tenant(store)
    await store.insert_session(_session("ses_1"), idempotency=claim("k", operation="op", payload={"a": 1}))
    with pytest.raises(IdempotencyKeyReused):
        await store.insert_session(
            _session("ses_2"), idempotency=claim("k", operation="op", payload={"a": 2})
        )
    assert await store.get_session("acme", "ses_2") is None


async def test_idempotency_keys_are_per_tenant(store: SqlStore) -> None:
    await _tenant(store, "acme")
    await _tenant(store, "other")
    request = claim("same", operation="op", payload={})
    first = await store.insert_session(_session("ses_1", tenant="acme"), idempotency=request)
    second = await store.insert_session(_session("ses_2", tenant="other"), idempotency=request)
    assert not first.replayed
    assert not second.replayed
    assert second.value.session_id == "ses_2"


async def test_the_schema_refuses_negative_spending_but_lets_a_logged_cost_pass_the_limit(
    store: SqlStore,
) -> None:
    await _tenant(store)
    await store.insert_session(_session("ses_1"))
    async with store.engines.write.begin() as conn:  # a logged cost is a record: it may pass the limit
        await conn.execute(sa.update(sessions).values(spent=50_000_001))
    with pytest.raises(IntegrityError):
        async with store.engines.write.begin() as conn:
            await conn.execute(sa.update(sessions).values(spent=-1))
