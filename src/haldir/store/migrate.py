"""Schema migrations: apply Alembic revisions to the configured store and report where it stands."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from haldir.errors import SchemaOutOfDate
from haldir.store.sql import SqlStore

_HERE = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x48414C444952  # "HALDIR"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The latest migration of this version, read from the scripts once per process (they do not change
    while it runs; health probes ask on every call)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations folder has no revisions"
    return head


@dataclass(frozen=True)
class MigrationStatus:
    backend: str
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


async def upgrade(store: SqlStore, revision: str = "head") -> MigrationStatus:
    """Apply migrations up to `revision` in one transaction (the store's writer connection)."""

    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    async with store.write_transaction() as conn:
        if store.backend == "postgresql":
            # Replicas starting together take turns; the later ones find the schema already at head.
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        await conn.run_sync(run)
    return await status(store)


async def status(store: SqlStore) -> MigrationStatus:
    return MigrationStatus(backend=store.backend, current=await store.schema_revision(), head=head_revision())


async def require_latest_schema(store: SqlStore) -> None:
    """Raise `SchemaOutOfDate`, saying what to run, unless the store is at the latest migration."""
    found = await status(store)
    if not found.up_to_date:
        raise SchemaOutOfDate(
            f"the {found.backend} schema is at {found.current or 'nothing'}, "
            f"this version needs {found.head}: run 'haldir migrate up'"
        )
