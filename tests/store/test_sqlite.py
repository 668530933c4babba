"""The embedded store: WAL, durable commits, one group commit per process taking the lock up front,
read-only readers, and statements that run inline instead of hopping to a driver thread."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from haldir.core import merkle
from haldir.store.schema import events, tenants, webhooks
from haldir.store.sql import SqlStore
from haldir.store.webhooks import _pairs_in

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 4, 5, tzinfo=UTC)


@pytest.fixture
def store_url(sqlite_url: str) -> str:
    return sqlite_url


def _pragma(conn: sa.Connection, name: str) -> object:
    return conn.execute(sa.text(f"PRAGMA {name}")).scalar()


def _engines(store: SqlStore) -> tuple[sa.Engine, sa.Engine]:
    assert store.engines.inline_write is not None
    assert store.engines.inline_read is not None
    return store.engines.inline_write, store.engines.inline_read


async def test_the_writer_uses_wal_full_sync_and_foreign_keys(store: SqlStore) -> None:
    for engine in _engines(store):
        with engine.connect() as conn:
            assert _pragma(conn, "journal_mode") == "wal"
            assert _pragma(conn, "synchronous") == 2  # FULL: acknowledged means on disk
            assert _pragma(conn, "foreign_keys") == 1
            assert _pragma(conn, "busy_timeout") == 10000


async def test_readers_cannot_write(store: SqlStore) -> None:
    _, read = _engines(store)
    with read.connect() as conn:
        assert _pragma(conn, "query_only") == 1
        with pytest.raises(OperationalError, match="readonly"):
            conn.execute(sa.text("DELETE FROM tenants"))
    async with store.scan_connection() as scan:
        with pytest.raises(OperationalError, match="readonly"):
            await scan.execute(sa.text("DELETE FROM tenants"))


def _recording(engine: sa.Engine) -> tuple[list[str], Any]:
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    return statements, record


async def test_concurrent_write_transactions_share_one_immediate_transaction_and_one_commit(
    store: SqlStore,
) -> None:
    write, _ = _engines(store)
    statements, record = _recording(write)
    assert store.groups is not None
    before = store.groups.counters.batches

    async def create(n: int) -> None:
        async with store.write_transaction() as tx:
            await tx.execute(sa.insert(tenants).values(tenant_id=f"t{n}", created_at=T0))

    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(create, n)
    finally:
        sa.event.remove(write, "before_cursor_execute", record)
    assert statements[0] == "BEGIN IMMEDIATE"
    assert statements.count("SAVEPOINT turn") == 20
    assert statements.count("COMMIT") == store.groups.counters.batches - before < 20
    with write.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tenants WHERE tenant_id LIKE 't%'")).scalar() == 20


async def test_a_failed_write_transaction_rolls_back_alone(store: SqlStore) -> None:
    async def good(n: int) -> None:
        async with store.write_transaction() as tx:
            await tx.execute(sa.insert(tenants).values(tenant_id=f"good{n}", created_at=T0))

    async def bad() -> None:
        async with store.write_transaction() as tx:
            await tx.execute(sa.insert(tenants).values(tenant_id="bad", created_at=T0))
            raise RuntimeError("refused")

    async def refused() -> None:
        with pytest.raises(RuntimeError, match="refused"):
            await bad()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(good, 1)
            tg.start_soon(refused)
            tg.start_soon(good, 2)
    async with store.read_connection() as conn:
        found = {row[0] for row in await conn.execute(sa.select(tenants.c.tenant_id))}
    assert {"good1", "good2"} <= found
    assert "bad" not in found


async def test_merkle_nodes_are_fetched_by_primary_key_not_by_scanning_the_tenant(store: SqlStore) -> None:
    _, read = _engines(store)
    captured: list[tuple[str, object]] = []

    def record(conn: object, cursor: object, statement: str, parameters: object, *args: object) -> None:
        if "merkle_nodes" in statement:
            captured.append((statement, parameters))

    sa.event.listen(read, "before_cursor_execute", record)
    try:
        await store.ledger.nodes("acme", {merkle.NodeId(0, 1), merkle.NodeId(3, 2)})
    finally:
        sa.event.remove(read, "before_cursor_execute", record)
    statement, parameters = captured[0]
    with read.connect() as conn:
        plan = " ".join(
            str(row[-1])
            for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)  # type: ignore[arg-type]
        )
    assert "tenant_id=? AND level=? AND idx=?" in plan, plan


async def test_the_webhook_fan_out_finds_its_events_by_key_not_by_scanning_them(store: SqlStore) -> None:
    """The fan-out marks up to 200 events of several tenants a transaction; the events table grows with the
    ledger, so a scan per fan-out made a long-running server slower minute by minute (bench/soak.py)."""
    pairs = [("t1", "evt_a"), ("t1", "evt_b"), ("t2", "evt_c")]
    statements = {
        "events": sa.update(events)
        .where(_pairs_in(events.c.tenant_id, events.c.event_id, pairs))
        .values(delivered_at=T0),
        "webhooks": sa.select(webhooks).where(_pairs_in(webhooks.c.tenant_id, webhooks.c.webhook_id, pairs)),
    }
    _, read = _engines(store)
    with read.connect() as conn:
        for table, statement in statements.items():
            compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
            plan = " | ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
            assert f"SCAN {table}" not in plan, plan
            assert f"SEARCH {table} USING" in plan, plan
    # The row-value IN it replaces is the scan this test guards against.
    row_value = sa.select(events).where(sa.tuple_(events.c.tenant_id, events.c.event_id).in_(pairs))
    with read.connect() as conn:
        compiled = row_value.compile(conn, compile_kwargs={"literal_binds": True})
        plan = " | ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
    assert "SCAN events" in plan, plan
