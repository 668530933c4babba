"""Composition root shared by the server and the operator CLI: settings in, a store and a governor out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from haldir.clock import SystemClock
from haldir.core.clock import Clock
from haldir.governor import Governor
from haldir.settings import Settings
from haldir.store.migrate import require_latest_schema
from haldir.store.sql import SqlStore


@dataclass(frozen=True)
class Runtime:
    store: SqlStore
    governor: Governor


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, clock: Clock | None = None, pool_size: int | None = None
) -> AsyncIterator[Runtime]:
    """Open the configured store, refuse an out-of-date schema, and wire a governor over it."""
    store = SqlStore.open(settings.store_url, pool_size=pool_size or settings.db_pool_size)
    try:
        await require_latest_schema(store)
        governor = Governor(
            store=store,
            clock=clock or SystemClock(),
            custom_scopes=frozenset(settings.custom_scopes),
            max_ttl=settings.session_max_ttl,
        )
        yield Runtime(store, governor)
    finally:
        await store.close()
