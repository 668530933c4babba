"""PostgreSQL connections the server dropped: one request may fail as unavailable, the next reconnects.

The pool does not ping a connection before each use (a round trip on every request); these tests hold
what that costs when PostgreSQL restarts or an operator terminates Haldir's backends.
"""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from haldir.errors import StoreUnavailable
from haldir.store.migrate import head_revision
from haldir.store.sql import SqlStore
from tests.conftest import ScratchDatabase
from tests.store.test_contract import _session, _tenant

pytestmark = pytest.mark.anyio


async def _terminate_backends(postgres_url: str) -> int:
    """Terminate every backend of the database but this one; how many there were."""
    admin = await asyncpg.connect(postgres_url)
    try:
        rows = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    return len(rows)


async def _fill_pool(store: SqlStore, size: int) -> None:
    """`size` connections opened at once, then back in the pool."""
    async with anyio.create_task_group() as tg:
        for _ in range(size):
            tg.start_soon(store.ping)


async def test_dropped_connections_cost_at_most_one_unavailable_answer(postgres_url: str) -> None:
    store = SqlStore.open(postgres_url, pool_size=4)
    try:
        await _tenant(store)
        await _fill_pool(store, 4)
        assert await _terminate_backends(postgres_url) >= 1

        outcomes = []
        for _ in range(6):
            try:
                assert await store.schema_revision() == head_revision()
                outcomes.append("ok")
            except StoreUnavailable:  # a dropped connection is never read as "not migrated"
                outcomes.append("unavailable")
        assert outcomes in (["ok"] * 6, ["unavailable"] + ["ok"] * 5)
        # Writes and reads of the same pool reconnect too, and find what was there.
        created = await store.insert_session(_session("ses_after_drop"))
        assert created.replayed is False
        found = await store.get_session("acme", "ses_after_drop")
        assert found is not None
    finally:
        await store.close()


async def test_a_write_on_a_dropped_connection_is_unavailable_not_half_done(postgres_url: str) -> None:
    store = SqlStore.open(postgres_url, pool_size=1)
    try:
        await _tenant(store)
        await store.ping()
        await _terminate_backends(postgres_url)
        try:
            await store.insert_session(_session("ses_maybe"))
        except StoreUnavailable:
            assert await store.get_session("acme", "ses_maybe") is None
        else:  # the pool noticed before the write: then it committed
            assert await store.get_session("acme", "ses_maybe") is not None
        assert await store.schema_revision() == head_revision()
    finally:
        await store.close()


async def test_a_database_that_is_gone_is_unavailable_for_reads_and_writes(
    scratch_postgres: ScratchDatabase,
) -> None:
    store = SqlStore.open(scratch_postgres.url, pool_size=1)
    try:
        await store.ping()
        await anyio.to_thread.run_sync(scratch_postgres.drop)  # it runs its own event loop

        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.schema_revision()
        with pytest.raises(StoreUnavailable):
            async with store.write_transaction():
                pass
    finally:
        await store.close()
