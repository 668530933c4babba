"""What the retention sweep reads and deletes, and the lock that lets one sweeper of all processes and
replicas run at a time. The ledger is not here: it is never pruned."""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from haldir.core.payments import AUTHORIZED, Payment
from haldir.store.rows import payment_from_row
from haldir.store.schema import idempotency_keys, payments

if TYPE_CHECKING:
    from haldir.store.sql import SqlStore

# pg_advisory_lock key of the sweep: an arbitrary constant, distinct from the migration lock's.
_SWEEP_LOCK = 0x68616C64_72657400  # "hald" "ret\0"


class SqlRetention:
    """Implements `haldir.store.ports.RetentionStore`."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    @asynccontextmanager
    async def sweep_lock(self) -> AsyncIterator[bool]:
        """Yield True while this process holds the sweep lock, False (at once, without waiting) when
        another sweeper holds it. PostgreSQL: a session advisory lock on a connection held for the
        sweep, so a process that dies releases it with its connection. SQLite: an `flock` on a file
        beside the database, released when the file is closed, by the kernel if the process dies."""
        engines = self._store.engines
        if engines.database is not None:
            with _file_lock(engines.database.with_name(engines.database.name + "-retention.lock")) as held:
                yield held
            return
        async with engines.write.connect() as conn:
            held = bool((await conn.execute(sa.select(sa.func.pg_try_advisory_lock(_SWEEP_LOCK)))).scalar())
            await conn.commit()
            try:
                yield held
            finally:
                if held:
                    await conn.execute(sa.select(sa.func.pg_advisory_unlock(_SWEEP_LOCK)))
                    await conn.commit()

    async def delete_idempotency_keys(self, *, created_until: datetime, limit: int) -> int:
        """Delete up to `limit` Idempotency-Keys of any tenant claimed at or before `created_until`;
        how many."""
        c = idempotency_keys.c
        oldest = (
            sa.select(c.tenant_id, c.key)
            .where(c.created_at <= created_until)
            .order_by(c.created_at)
            .limit(limit)
        )
        statement = sa.delete(idempotency_keys).where(sa.tuple_(c.tenant_id, c.key).in_(oldest))
        async with self._store.write_transaction() as conn:
            deleted = await conn.execute(statement)
        return int(deleted.rowcount)

    async def lapsed_payments(self, *, created_until: datetime, limit: int) -> list[Payment]:
        """Up to `limit` payments of any tenant still authorized and authorized at or before `created_until`,
        oldest first: what the sweep expires."""
        c = payments.c
        query = (
            sa.select(payments)
            .where(c.status == AUTHORIZED, c.created_at <= created_until)
            .order_by(c.created_at, c.tenant_id, c.payment_id)
            .limit(limit)
        )
        async with self._store.scan_connection() as conn:
            rows = (await conn.execute(query)).all()
        return [payment_from_row(row) for row in rows]


@contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(descriptor)  # releases the lock
