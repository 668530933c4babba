"""The change counter: how the processes of one machine tell each other that cached state changed.

An 8-byte counter in a small memory-mapped file. A process that commits a change to cached state (a key
or session revoked, a policy, rule, pin or secret changed) bumps it after the commit; every cache reads
it (a memory load, well under a microsecond) before serving from memory and drops what it holds when it
moved. So a revocation is refused by the very next request on every worker process of the machine.
Replicas on other machines hear of changes through the store (PostgreSQL LISTEN/NOTIFY) and bump it too.
"""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
import secrets
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import structlog

SIZE = 8
_COUNTER = struct.Struct("<Q")


class ChangeCounter:
    """A counter shared through `path` (created, mode 0600, when missing)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < SIZE:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    if os.fstat(fd).st_size < SIZE:
                        os.ftruncate(fd, SIZE)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, SIZE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.path = path

    def read(self) -> int:
        value: int = _COUNTER.unpack_from(self._map, 0)[0]
        return value

    def bump(self) -> int:
        """Move the counter on (after the change committed); its new value."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            value = (self.read() + 1) % (1 << 64)
            _COUNTER.pack_into(self._map, 0, value)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return value

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


def counter_path(database: Path) -> Path:
    """Where the processes sharing an SQLite database keep their counter: beside it."""
    return database.with_name(database.name + "-changes")


class LocalCounter:
    """A counter for one process alone (a PostgreSQL store opened without a data directory)."""

    path = None

    def __init__(self) -> None:
        self._value = 0

    def read(self) -> int:
        return self._value

    def bump(self) -> int:
        self._value += 1
        return self._value

    def close(self) -> None:
        pass


CHANNEL = "haldir_changes"
RECONNECT_S = (0.1, 0.5, 1.0, 2.0)  # waits between attempts to listen again; the last one repeats
# While listening, caches are also emptied this often: a change whose NOTIFY was lost (its replica died
# between its commit and its NOTIFY, or the NOTIFY failed) is in force everywhere this late at worst.
FORGET_S = 30.0
Counter = ChangeCounter | LocalCounter


class Changes:
    """This process's view of changes to cached state (`epoch`), and how it tells the others (`announce`).

    On SQLite the counter file is the whole story: every process using the database is on this machine.
    On PostgreSQL other replicas learn of a change by NOTIFY on `haldir_changes`, which `listen` turns into
    a bump of this machine's counter. While `listen` is not connected (not started, or reconnecting),
    `epoch` is None: a change could go unheard, so nothing may be served from a cache. While it is, it
    also bumps the counter every `forget_every` seconds, which bounds how long a lost NOTIFY is unheard.
    """

    def __init__(
        self,
        counter: Counter,
        *,
        notify: Notify | None = None,
        listen_url: str | None = None,
        forget_every: float = FORGET_S,
    ) -> None:
        self._counter = counter
        self._notify = notify
        self._listen_url = listen_url
        self._forget_every = forget_every
        self._listening = listen_url is None
        # Who announced: a random name, not a pid (replicas in containers all run as the same pid), so a
        # process skips only its own announcements, which already moved its counter.
        self._origin = secrets.token_hex(8)

    def epoch(self) -> int | None:
        return self._counter.read() if self._listening else None

    async def announce(self) -> None:
        """Tell every process that cached state changed; call it after the change committed."""
        self._counter.bump()
        if self._notify is not None:
            try:
                await self._notify(self._origin)
            except Exception as exc:  # the change is committed: its caller must not be told it failed
                log.error(
                    "changes.notify_failed",
                    error=type(exc).__name__,
                    advice="other replicas keep serving their caches until the next change reaches them",
                )

    async def listen(self) -> None:
        """Hear other replicas' changes until cancelled (a task for the life of a server process)."""
        if self._listen_url is None:
            return
        attempt = 0
        while True:
            try:
                conn = await asyncpg.connect(self._listen_url)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("changes.listen_failed", error=type(exc).__name__)
                await asyncio.sleep(RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)])
                attempt += 1
                continue
            attempt = 0
            try:
                await self._hear(conn)
            finally:
                self._listening = False
                if not conn.is_closed():
                    await asyncio.shield(conn.close(timeout=5))
            log.warning("changes.listen_lost")

    async def _hear(self, conn: Any) -> None:
        lost = asyncio.Event()

        def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            if payload != self._origin:
                self._counter.bump()

        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, heard)
        self._counter.bump()  # what changed while nobody listened is unknown: start afresh
        self._listening = True
        while not lost.is_set():
            try:
                await asyncio.wait_for(lost.wait(), timeout=self._forget_every)
            except TimeoutError:  # a NOTIFY may have been lost: what is cached may be that old
                self._counter.bump()

    def close(self) -> None:
        self._counter.close()


Notify = Callable[[str], Awaitable[None]]
log = structlog.get_logger("haldir.changes")
