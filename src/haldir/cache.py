"""Read-through caches of hot state (API keys, sessions, rules, policies, pins, secrets), valid while the
change counter stands still. The services and the store's ledger (anomaly rules) keep them.

A reader takes a `token` (the counter's value) *before* reading the store, and puts what it read under
that token: if the counter moved meanwhile, the value is not kept, so a cache never holds state older than
the last change it was told of. Any change empties every cache of every process at its next read; changes
are rare next to reads, so nothing finer is worth its bookkeeping. Budgets and the ledger head are never
cached.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Epoch = Callable[[], int | None]  # the change counter; None: changes cannot be heard now, cache nothing


class Cache(Generic[K, V]):
    """At most `maxsize` values (the oldest put is dropped first), all dropped when the counter moves."""

    def __init__(self, epoch: Epoch, *, maxsize: int) -> None:
        self._epoch = epoch
        self._maxsize = maxsize
        self._values: dict[K, V] = {}
        self._seen: int | None = None

    def token(self) -> int | None:
        """The counter now, dropping every value if it moved: take it before reading the store."""
        current = self._epoch()
        if current != self._seen:
            self._values.clear()
            self._seen = current
        return current

    def get(self, key: K) -> V | None:
        if self.token() is None:
            return None
        return self._values.get(key)

    def put(self, key: K, value: V, token: int | None) -> None:
        """Keep `value`, read from the store after `token` was taken, unless a change came since."""
        if token is None or self.token() != token:
            return
        if len(self._values) >= self._maxsize and key not in self._values:
            del self._values[next(iter(self._values))]
        self._values[key] = value

    async def read_through(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        """The value of `key` from memory, else `load()`'s, kept (unless None, or a change came while it
        loaded) for the next reader."""
        if (cached := self.get(key)) is not None:
            return cached
        token = self.token()
        value = await load()
        if value is not None:
            self.put(key, value, token)
        return value

    def drop(self, key: K) -> None:
        self._values.pop(key, None)

    def drop_where(self, stale: Callable[[V], bool]) -> int:
        """Drop every value `stale` is true of; how many."""
        keys = [key for key, value in self._values.items() if stale(value)]
        for key in keys:
            del self._values[key]
        return len(keys)

    def __len__(self) -> int:
        return len(self._values)
