"""The proxy's persistence on both stores: counters that hold under concurrency, tool syncs that apply
once, and every row scoped to its tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest
import sqlalchemy as sa

from haldir.core.keys import Principal
from haldir.core.ledger import EntryFilter
from haldir.errors import NotFound
from haldir.governor import Governor
from haldir.store.schema import proxy_rate_counters, proxy_spend_counters
from haldir.store.sql import SqlStore

pytestmark = pytest.mark.anyio

ACME = Principal.operator("acme")
GLOBEX = Principal.operator("globex")
URL = "https://93.184.216.34/mcp"  # a public address: no DNS lookup in tests
HOUR = datetime(2026, 4, 5, 19, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
async def _tenants(governor: Governor) -> None:
    for tenant in ("acme", "globex"):
        await governor.keys.create_key(Principal.operator(tenant), name="setup", scopes=["*"])


async def _take(store: SqlStore, subject: str, *, at: datetime, max_calls: int = 3) -> int | None:
    async with store.spend_transaction("acme") as tx:
        return await tx.take_call("pol_r", subject, max_calls=max_calls, window_start=at)


async def test_a_rate_counter_counts_to_its_limit_then_refuses_until_the_next_window(store: SqlStore) -> None:
    counts = [await _take(store, "session:s1", at=HOUR) for _ in range(4)]
    assert counts == [1, 2, 3, None]
    assert await _take(store, "session:s2", at=HOUR) == 1
    later = HOUR + timedelta(hours=1)
    assert await _take(store, "session:s1", at=later) == 1
    assert await _take(store, "session:s1", at=HOUR) == 2  # a lagging clock counts into the newer window
    async with store.read_connection() as conn:
        rows = (await conn.execute(sa.select(proxy_rate_counters))).all()
    assert len(rows) == 2  # one row per (policy, subject): old windows are overwritten, not kept


async def test_concurrent_rate_takes_never_exceed_the_limit(store: SqlStore) -> None:
    results: list[int | None] = []

    async def take() -> None:
        results.append(await _take(store, "tenant", at=HOUR, max_calls=7))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(25):
                tg.start_soon(take)
    assert sorted(r for r in results if r is not None) == list(range(1, 8))
    assert results.count(None) == 18


async def test_a_spend_counter_charges_within_its_limit_and_releases(store: SqlStore) -> None:
    async def charge(micros: int) -> int | None:
        async with store.spend_transaction("acme") as tx:
            return await tx.charge_limit("pol_s", "agent:a", micros, max_micros=1_000_000)

    assert await charge(600_000) == 600_000
    assert await charge(500_000) is None
    assert await charge(2_000_000) is None
    assert await charge(400_000) == 1_000_000
    async with store.spend_transaction("acme") as tx:
        await tx.release_limit("pol_s", "agent:a", 400_000)
        await tx.release_limit("pol_gone", "agent:a", 400_000)  # nothing to release: no error
    async with store.read_connection() as conn:
        spent = (await conn.execute(sa.select(proxy_spend_counters.c.spent))).scalar()
    assert spent == 600_000


async def test_a_rolled_back_transaction_leaves_counters_untouched(store: SqlStore) -> None:
    async def take_then_fail() -> None:
        async with store.spend_transaction("acme") as tx:
            assert await tx.take_call("pol_r", "tenant", max_calls=1, window_start=HOUR) == 1
            raise RuntimeError("refused later in the same transaction")

    with pytest.raises(RuntimeError):
        await take_then_fail()
    assert await _take(store, "tenant", at=HOUR, max_calls=1) == 1


async def test_upstreams_tools_and_policies_are_scoped_to_their_tenant(governor: Governor) -> None:
    await governor.registry.register_upstream(ACME, name="web", url=URL)
    await governor.registry.record_tools("acme", "web", [{"name": "search"}])
    await governor.registry.create_policy(ACME, {"type": "deny", "tools": ["search"]})
    assert await governor.registry.list_upstreams(GLOBEX) == []
    assert await governor.registry.list_proxy_tools(GLOBEX) == []
    assert await governor.registry.list_policies(GLOBEX) == []
    await governor.registry.register_upstream(GLOBEX, name="web", url=URL)  # the same name in another tenant
    assert [u.tenant_id for u in await governor.registry.list_upstreams(GLOBEX)] == ["globex"]


async def test_concurrent_syncs_of_one_changed_tool_record_the_change_once(governor: Governor) -> None:
    await governor.registry.register_upstream(ACME, name="web", url=URL)
    await governor.registry.record_tools("acme", "web", [{"name": "search", "description": "v1"}])
    changed: list[tuple[str, ...]] = []

    async def sync() -> None:
        changed.append(
            (
                await governor.registry.record_tools("acme", "web", [{"name": "search", "description": "v2"}])
            ).changed
        )

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(sync)
    assert sorted(changed) == [(), (), (), (), (), (), (), ("search",)]
    page = await governor.ledger.list_entries(ACME, where=EntryFilter(tool="proxy", flagged=True), limit=50)
    assert [entry.record["action"] for entry in page.entries] == ["proxy.tool.changed"]


async def test_deleting_a_policy_deletes_its_counters(governor: Governor, store: SqlStore) -> None:
    policy = await governor.registry.create_policy(
        ACME, {"type": "rate_limit", "max_calls": 5, "window_seconds": 60}
    )
    async with store.spend_transaction("acme") as tx:
        await tx.take_call(policy.policy_id, "tenant", max_calls=5, window_start=HOUR)
        await tx.charge_limit(policy.policy_id, "tenant", 5, max_micros=10)
    await governor.registry.delete_policy(ACME, policy.policy_id)
    async with store.read_connection() as conn:
        for table in (proxy_rate_counters, proxy_spend_counters):
            assert (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar() == 0


async def test_a_sync_of_an_upstream_deleted_meanwhile_stores_nothing(governor: Governor) -> None:
    await governor.registry.register_upstream(ACME, name="web", url=URL)
    await governor.registry.delete_upstream(ACME, "web")
    with pytest.raises(NotFound):
        await governor.registry.record_tools("acme", "web", [{"name": "search"}])
    assert await governor.registry.list_proxy_tools(ACME) == []
