"""Engines for the two backends: SQLite (one writer, many readers) and PostgreSQL (one pool)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, SingletonThreadPool

from haldir.errors import ConfigurationError

Backend = Literal["sqlite", "postgresql"]

# Durable commits (FULL) in WAL mode; a writer waits up to 10 s for another process's lock.
_SQLITE_PRAGMAS = (
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-16000",
    "PRAGMA mmap_size=268435456",
)


@dataclass
class Engines:
    """The store's engines. On SQLite also the synchronous ones whose statements run inline on the event
    loop (`haldir.store.inline`): `inline_read` for point reads, `inline_write` for the group commit."""

    backend: Backend
    write: AsyncEngine
    read: AsyncEngine
    database: Path | None = None  # the SQLite file
    inline_read: Engine | None = None
    inline_write: Engine | None = None

    async def dispose(self) -> None:
        await self.write.dispose()
        if self.read.sync_engine.pool is not self.write.sync_engine.pool:  # PostgreSQL's share one
            await self.read.dispose()
        for engine in (self.inline_read, self.inline_write):
            if engine is not None:
                engine.dispose()


def resolve_url(url: str) -> tuple[Backend, URL]:
    """Map a user-facing store URL to its async driver URL."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+aiosqlite"):
        return "sqlite", parsed.set(drivername="sqlite+aiosqlite")
    if parsed.drivername in ("postgresql", "postgres", "postgresql+asyncpg"):
        return "postgresql", parsed.set(drivername="postgresql+asyncpg")
    raise ConfigurationError(
        f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:///PATH or postgresql://HOST/DB"
    )


def create_engines(url: str, *, pool_size: int = 10) -> Engines:
    backend, driver_url = resolve_url(url)
    if backend == "postgresql":
        # No ping per checkout (a round trip on every request): a connection the server dropped fails its
        # statement, which the caller gets as StoreUnavailable (503), and SQLAlchemy then replaces every
        # connection of the pool that predates the failure, so the next request reconnects.
        engine = create_async_engine(driver_url, pool_size=pool_size, max_overflow=0, pool_timeout=30)
        # Readers share the pool in autocommit: one statement is one snapshot, as on SQLite, without a
        # BEGIN and a ROLLBACK around every read.
        return Engines(backend, engine, engine.execution_options(isolation_level="AUTOCOMMIT"))
    if not driver_url.database or driver_url.database == ":memory:":
        raise ConfigurationError("SQLite needs a file path: an in-memory database would lose every write")
    path = Path(driver_url.database)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # One writer connection per process: writes queue on the pool instead of fighting over the lock.
    write = create_async_engine(driver_url, pool_size=1, max_overflow=0, pool_timeout=60)
    # Readers run each statement in autocommit: one statement is one consistent snapshot, and there is
    # nothing to roll back when a connection goes back to the pool (each round trip is a thread hop).
    read = create_async_engine(
        driver_url, pool_size=4, max_overflow=0, pool_timeout=30, pool_reset_on_return=None
    )
    _configure_sqlite(write, begin="BEGIN IMMEDIATE", extra=("PRAGMA journal_mode=WAL",))
    _configure_sqlite(read, begin=None, extra=("PRAGMA query_only=ON",))
    # The inline engines: the event loop's thread runs their statements (the group commit's COMMIT runs on
    # a thread, hence check_same_thread off); SQLAlchemy never begins or ends a transaction on them.
    sync_url = driver_url.set(drivername="sqlite+pysqlite")
    inline_options: dict[str, Any] = {
        "connect_args": {"check_same_thread": False},
        "isolation_level": "AUTOCOMMIT",
        "poolclass": SingletonThreadPool,
    }
    inline_read = create_engine(sync_url, **inline_options)
    inline_write = create_engine(sync_url, **inline_options)
    _configure_inline(inline_read, ("PRAGMA query_only=ON",))
    _configure_inline(inline_write, ("PRAGMA journal_mode=WAL",))
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # never world-readable, not even briefly
    return Engines(backend, write, read, path, inline_read, inline_write)


def _configure_inline(engine: Engine, extra: tuple[str, ...]) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # we say BEGIN IMMEDIATE and COMMIT ourselves
        cursor = dbapi_connection.cursor()
        for pragma in (*extra, *_SQLITE_PRAGMAS):
            cursor.execute(pragma)
        cursor.close()


def _configure_sqlite(engine: AsyncEngine, *, begin: str | None, extra: tuple[str, ...]) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control from the driver so that we can say BEGIN IMMEDIATE ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (*extra, *_SQLITE_PRAGMAS):
            cursor.execute(pragma)
        cursor.close()

    if begin is None:
        return

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)
