"""The embedded store: WAL, durable commits, one writer taking the lock up front, read-only readers."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from haldir.core import merkle
from haldir.store.sql import SqlStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def store_url(sqlite_url: str) -> str:
    return sqlite_url


async def _pragma(conn: sa.ext.asyncio.AsyncConnection, name: str) -> object:
    return (await conn.execute(sa.text(f"PRAGMA {name}"))).scalar()


async def test_the_writer_uses_wal_full_sync_and_foreign_keys(store: SqlStore) -> None:
    async with store.engines.write.connect() as conn:
        assert await _pragma(conn, "journal_mode") == "wal"
        assert await _pragma(conn, "synchronous") == 2  # FULL: acknowledged means on disk
        assert await _pragma(conn, "foreign_keys") == 1
        assert await _pragma(conn, "busy_timeout") == 10000


async def test_there_is_one_writer_connection_per_process(store: SqlStore) -> None:
    pool = store.engines.write.pool
    assert pool.size() == 1  # type: ignore[attr-defined]
    assert store.engines.read is not store.engines.write


async def test_readers_cannot_write(store: SqlStore) -> None:
    async with store.engines.read.connect() as conn:
        assert await _pragma(conn, "query_only") == 1
        with pytest.raises(OperationalError, match="readonly"):
            await conn.execute(sa.text("DELETE FROM tenants"))


async def test_write_transactions_begin_immediate(store: SqlStore) -> None:
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    sa.event.listen(store.engines.write.sync_engine, "before_cursor_execute", record)
    try:
        async with store.engines.write.begin() as conn:
            await conn.execute(sa.text("SELECT 1"))
    finally:
        sa.event.remove(store.engines.write.sync_engine, "before_cursor_execute", record)
    assert statements[0] == "BEGIN IMMEDIATE"


async def test_merkle_nodes_are_fetched_by_primary_key_not_by_scanning_the_tenant(store: SqlStore) -> None:
    captured: list[tuple[str, object]] = []

    def record(conn: object, cursor: object, statement: str, parameters: object, *args: object) -> None:
        if "merkle_nodes" in statement:
            captured.append((statement, parameters))

    sa.event.listen(store.engines.read.sync_engine, "before_cursor_execute", record)
    try:
        await store.ledger.nodes("acme", {merkle.NodeId(0, 1), merkle.NodeId(3, 2)})
    finally:
        sa.event.remove(store.engines.read.sync_engine, "before_cursor_execute", record)
    statement, parameters = captured[0]
    async with store.engines.read.connect() as conn:
        plan = " ".join(
            str(row[-1]) for row in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        )
    assert "tenant_id=? AND level=? AND idx=?" in plan, plan
