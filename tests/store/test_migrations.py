"""Migrations are the one source of the schema: applied, they equal `schema.metadata` on both stores."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from haldir.store import migrate
from haldir.store.schema import metadata
from haldir.store.sql import SqlStore

pytestmark = pytest.mark.anyio


async def test_migrated_schema_matches_the_table_definitions(store: SqlStore) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with store.engines.read.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_upgrading_an_up_to_date_store_changes_nothing(store: SqlStore) -> None:
    before = await migrate.status(store)
    after = await migrate.upgrade(store)
    assert before.up_to_date
    assert after.up_to_date
    assert after.current == migrate.head_revision()


async def test_a_new_store_reports_pending_migrations_until_upgraded(tmp_path: Path) -> None:
    store = SqlStore.open(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        pending = await migrate.status(store)
        assert pending.current is None
        assert not pending.up_to_date
        assert (await migrate.upgrade(store)).up_to_date
    finally:
        await store.close()


async def test_upgrading_sqlite_past_0005_keeps_sessions_and_lets_spent_pass_the_limit(
    tmp_path: Path,
) -> None:
    store = SqlStore.open(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        await migrate.upgrade(store, "0004")
        async with store.write_transaction() as conn:
            await conn.execute(sa.text("INSERT INTO tenants (tenant_id, created_at) VALUES ('acme', 0)"))
            await conn.execute(
                sa.text(
                    "INSERT INTO sessions (tenant_id, session_id, agent_id, scopes, spend_limit, spent, ttl, "
                    "created_at, expires_at) VALUES ('acme', 'ses_1', 'bot', '[]', 5, 5, 60, 0, 60)"
                )
            )
        assert (await migrate.upgrade(store)).up_to_date
        async with store.write_transaction() as conn:
            await conn.execute(sa.text("UPDATE sessions SET spent = spent + 10 WHERE session_id = 'ses_1'"))
            row = (await conn.execute(sa.text("SELECT agent_id, spend_limit, spent FROM sessions"))).one()
            assert tuple(row) == ("bot", 5, 15)
            with pytest.raises(sa.exc.IntegrityError):
                await conn.execute(sa.text("UPDATE sessions SET spent = -1"))
    finally:
        await store.close()
