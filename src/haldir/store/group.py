"""SQLite group commit: every write transaction of a process is a turn in one shared transaction, and
all of them become durable with one COMMIT.

SQLite has one writer at a time and a durable COMMIT costs an fsync (milliseconds), so a transaction per
request caps a server at a few hundred writes a second. Here a write transaction is a *turn* inside the
batch the process has open: its statements run inline under a SAVEPOINT (a failed turn rolls back to it
and nothing else), and the caller learns its outcome only once the batch's COMMIT is on disk. Turns that
arrive while a batch is still running its turns join it; the COMMIT itself runs on a thread.

Across processes the batches take turns through an `flock` on a file beside the database, waited for on a
thread: a process never sleeps in SQLite's busy handler (which polls in millisecond steps) and never blocks
its event loop on another process's commit.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Connection, Engine

from haldir.store.inline import InlineConnection
from haldir.store.transaction import Queued

MAX_TURNS = 256  # turns in one batch; later ones wait for the next


@dataclass
class Batch:
    """One shared transaction: its connection, what its turns queued for the end (ledger appends), and
    the future that says when it is durable."""

    conn: InlineConnection
    committed: asyncio.Future[None]
    pending: list[Queued] = field(default_factory=list)  # entries and changes its turns queued
    after_commit: list[Callable[[], None]] = field(default_factory=list)  # run once the batch is durable
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    admitted: int = 0
    finished: int = 0
    all_finished: asyncio.Event = field(default_factory=asyncio.Event)

    def admit(self) -> None:
        self.admitted += 1
        self.all_finished.clear()

    def finish_turn(self) -> None:
        self.finished += 1
        if self.finished == self.admitted:
            self.all_finished.set()


Finish = Callable[[Batch], Awaitable[None]]


@dataclass
class Counters:
    """What the benchmarks read: turns per batch is `turns / batches`."""

    batches: int = 0
    turns: int = 0
    lock_waits: int = 0  # batches that waited for another process's commit


class GroupTransactions:
    """Hands out turns in this process's shared write transaction. `finish` runs after the last turn of a
    batch and before its COMMIT, on the same connection (it appends what the turns queued)."""

    def __init__(
        self,
        engine: Engine,
        lock_path: Path,
        *,
        finish: Finish,
        committed: Callable[[int], None] = lambda size: None,
        max_turns: int = MAX_TURNS,
    ) -> None:
        self._engine = engine
        self._writer_lock = WriterLock(lock_path)
        self._finish = finish
        self._committed = committed  # told each durable batch's number of turns
        self._max_turns = max_turns
        self._waiting: list[asyncio.Future[Batch]] = []
        self._open: Batch | None = None  # running its turns: newcomers may still join
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._conn: Connection | None = None
        self._closed = False
        self.counters = Counters()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[Batch]:
        """A turn in a batch: the body runs under a SAVEPOINT, alone on the connection; leaving the block
        waits until the batch is durable (or raises what broke it)."""
        if self._closed:
            raise RuntimeError("the store is closed")
        batch = self._open
        if batch is not None and batch.admitted < self._max_turns:
            batch.admit()
        else:
            batch = await self._next_batch()
        try:
            async with batch.turn:
                raw = batch.conn.sync
                mark = len(batch.pending)
                raw.exec_driver_sql("SAVEPOINT turn")
                try:
                    yield batch
                except BaseException:
                    raw.exec_driver_sql("ROLLBACK TO SAVEPOINT turn")
                    raw.exec_driver_sql("RELEASE SAVEPOINT turn")
                    del batch.pending[mark:]
                    raise
                raw.exec_driver_sql("RELEASE SAVEPOINT turn")
        finally:
            batch.finish_turn()
        await asyncio.shield(batch.committed)

    async def _next_batch(self) -> Batch:
        admitted: asyncio.Future[Batch] = asyncio.get_running_loop().create_future()
        self._waiting.append(admitted)
        self._wake.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="haldir-group-commit")
        try:
            return await admitted
        except asyncio.CancelledError:
            if admitted.done() and not admitted.cancelled():  # admitted as we were cancelled: give it back
                admitted.result().finish_turn()
            raise

    async def aclose(self) -> None:
        """Let the batches already asked for commit, then close the connection."""
        self._closed = True
        self._wake.set()
        if self._runner is not None:
            await self._runner
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._writer_lock.close()

    async def _run(self) -> None:
        while self._waiting or not self._closed:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._one_batch()

    async def _one_batch(self) -> None:
        conn = self._connection()
        raw = conn.connection.dbapi_connection
        await self._lock()
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException as exc:
            self._unlock()
            self._fail_waiting(exc)
            return
        batch = Batch(InlineConnection(conn), asyncio.get_running_loop().create_future())
        admitted, self._waiting = self._waiting[: self._max_turns], self._waiting[self._max_turns :]
        admitted = [future for future in admitted if not future.done()]
        for future in admitted:
            batch.admit()
            future.set_result(batch)
        if not admitted:
            batch.all_finished.set()
        self._open = batch
        try:
            while batch.finished < batch.admitted:  # a late turn may join after the event was set
                batch.all_finished.clear()
                await batch.all_finished.wait()
            self._open = None
            await self._finish(batch)
            # The durable part, fsync included, on a thread: the event loop serves other requests meanwhile.
            await asyncio.to_thread(conn.exec_driver_sql, "COMMIT")
        except BaseException as exc:
            self._open = None
            if getattr(raw, "in_transaction", False):
                conn.exec_driver_sql("ROLLBACK")
            batch.committed.set_exception(exc)
            batch.committed.exception()  # retrieved: a batch whose turns all failed must not warn
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            for committed in batch.after_commit:
                committed()
            batch.committed.set_result(None)
            self.counters.batches += 1
            self.counters.turns += batch.admitted
            self._committed(batch.admitted)
        finally:
            self._unlock()

    def _fail_waiting(self, exc: BaseException) -> None:
        waiting, self._waiting = self._waiting, []
        for future in waiting:
            if not future.done():
                future.set_exception(exc)

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    async def _lock(self) -> None:
        if await self._writer_lock.acquire():
            self.counters.lock_waits += 1

    def _unlock(self) -> None:
        self._writer_lock.release()


class WriterLock:
    """The lock the processes of one database take turns with, fairly.

    `flock` alone is not fair: a process that releases it and asks again at once usually wins against the
    one that was waiting (whose thread must first wake up), so a busy process can starve another for
    seconds. So a waiting process also holds a shared lock on a second file while it waits, and a process
    that releases sees whether anyone holds it: if so, its next turn waits in line instead of grabbing.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock_fd: int | None = None
        self._queue_fd: int | None = None
        self._yield = False  # someone waited when we released: queue up behind them next time

    async def acquire(self) -> bool:
        """Take the lock; True when it had to wait for another process."""
        if self._lock_fd is None or self._queue_fd is None:
            self._lock_fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            queue = self._path.with_name(self._path.name + "-queue")
            self._queue_fd = os.open(queue, os.O_RDWR | os.O_CREAT, 0o600)
        if not self._yield:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return False
            except BlockingIOError:
                pass
        self._yield = False
        fcntl.flock(self._queue_fd, fcntl.LOCK_SH)  # "someone waits": never blocks (probes never hold it)
        try:
            await asyncio.to_thread(fcntl.flock, self._lock_fd, fcntl.LOCK_EX)
        finally:
            fcntl.flock(self._queue_fd, fcntl.LOCK_UN)
        return True

    def release(self) -> None:
        if self._lock_fd is None or self._queue_fd is None:
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        try:
            fcntl.flock(self._queue_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._yield = True  # another process waits: it goes first
        else:
            fcntl.flock(self._queue_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in (self._lock_fd, self._queue_fd):
            if fd is not None:
                os.close(fd)
        self._lock_fd = None
        self._queue_fd = None


def writer_lock_path(database: Path) -> Path:
    """The file whose `flock` orders the writers of `database` across processes."""
    return database.with_name(database.name + "-writer.lock")
