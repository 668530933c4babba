"""Shared plumbing for operator commands: settings, the store and a governor, opened and closed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio

from haldir.clock import SystemClock
from haldir.errors import SchemaOutOfDate
from haldir.governor import Governor
from haldir.settings import Settings
from haldir.store.migrate import status
from haldir.store.sql import SqlStore

T = TypeVar("T")


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[SqlStore]:
    store = SqlStore.open(settings.store_url, pool_size=2)
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def open_governor(settings: Settings) -> AsyncIterator[Governor]:
    async with open_store(settings) as store:
        migrations = await status(store)
        if not migrations.up_to_date:
            raise SchemaOutOfDate(
                f"the schema is at {migrations.current or 'nothing'}, this version needs {migrations.head}: "
                "run 'haldir migrate up'"
            )
        yield Governor(
            store=store,
            clock=SystemClock(),
            custom_scopes=frozenset(settings.custom_scopes),
            max_ttl=settings.session_max_ttl,
        )


def run(work: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(work)
