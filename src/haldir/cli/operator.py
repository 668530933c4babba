"""Shared plumbing for operator commands: the store or a governor, opened and closed around the work."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio

from haldir.governor import Governor
from haldir.runtime import open_runtime
from haldir.settings import Settings
from haldir.store.sql import SqlStore

T = TypeVar("T")

_POOL = 2  # one command at a time: a small pool is plenty


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[SqlStore]:
    """The store without a schema check, for the migration commands."""
    store = SqlStore.open(settings.store_url, pool_size=_POOL)
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def open_governor(settings: Settings) -> AsyncIterator[Governor]:
    async with open_runtime(settings, pool_size=_POOL) as runtime:
        yield runtime.governor


def run(work: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(work)
